//! Answer extraction (REFERENCE.md §5, first two bullets): the text after the last
//! `</think>`, Hendrycks' `last_boxed_only_string` and verl's `remove_boxed`.
//!
//! One left-to-right byte scan with an integer brace counter, as the Python does,
//! so 100,000 nested braces cost no stack and a million `\boxed` cost one `rfind`.

/// Why no answer came out of a response (each maps to a [`super::Reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    /// Neither `\boxed` nor `\fbox` occurs.
    NoBoxed,
    /// The box is found but its braces never close.
    Unclosed,
    /// The last box is `\fbox{..}`: located, then rejected by `remove_boxed`.
    Fbox,
    /// The last `\boxed` is not followed by `{` (e.g. `\boxed {5}`, `\boxed5`).
    Malformed,
}

/// The part of `response` the reference scores: after the last `</think>` if any.
pub fn after_think(response: &str) -> &str {
    match response.rfind("</think>") {
        Some(i) => &response[i + "</think>".len()..],
        None => response,
    }
}

/// Hendrycks' `last_boxed_only_string`: the slice from the last `\boxed` (else the
/// last `\fbox`) through the brace that brings the open count back to zero.
pub fn last_boxed_only_string(s: &str) -> Result<&str, ExtractError> {
    let idx = match s.rfind("\\boxed") {
        Some(i) => i,
        None => s.rfind("\\fbox").ok_or(ExtractError::NoBoxed)?,
    };
    let bytes = s.as_bytes();
    let mut open: i64 = 0;
    for (off, &b) in bytes[idx..].iter().enumerate() {
        if b == b'{' {
            open += 1;
        } else if b == b'}' {
            open -= 1;
            if open == 0 {
                // `}` is ASCII, so idx + off + 1 is a char boundary.
                return Ok(&s[idx..idx + off + 1]);
            }
        }
    }
    Err(ExtractError::Unclosed)
}

/// verl's `remove_boxed`: strip `\boxed{` and the final `}`; anything else fails.
pub fn remove_boxed(s: &str) -> Result<&str, ExtractError> {
    const LEFT: &str = "\\boxed{";
    if s.starts_with(LEFT) && s.ends_with('}') && s.len() > LEFT.len() {
        Ok(&s[LEFT.len()..s.len() - 1])
    } else if s.starts_with("\\boxed") {
        Err(ExtractError::Malformed)
    } else {
        Err(ExtractError::Fbox)
    }
}

/// The boxed answer of a response, as the reference extracts it.
pub fn extract_answer(response: &str) -> Result<&str, ExtractError> {
    let text = after_think(response);
    remove_boxed(last_boxed_only_string(text)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_box_wins() {
        assert_eq!(extract_answer("\\boxed{1} then \\boxed{2}"), Ok("2"));
    }

    #[test]
    fn nested_braces_kept() {
        assert_eq!(extract_answer("\\boxed{\\frac{1}{2}}"), Ok("\\frac{1}{2}"));
        assert_eq!(extract_answer("\\boxed{{3}}"), Ok("{3}"));
    }

    #[test]
    fn boxed_inside_boxed_takes_inner() {
        assert_eq!(extract_answer("\\boxed{\\boxed{7}}"), Ok("7"));
    }

    #[test]
    fn think_prefix_dropped() {
        assert_eq!(extract_answer("<think>\\boxed{1}</think> so \\boxed{2}"), Ok("2"));
        assert_eq!(extract_answer("\\boxed{1}</think> no box after"), Err(ExtractError::NoBoxed));
    }

    #[test]
    fn failures() {
        assert_eq!(extract_answer("the answer is 5"), Err(ExtractError::NoBoxed));
        assert_eq!(extract_answer("\\boxed{5"), Err(ExtractError::Unclosed));
        assert_eq!(extract_answer("\\fbox{5}"), Err(ExtractError::Fbox));
        assert_eq!(extract_answer("\\boxed {5}"), Err(ExtractError::Malformed));
        // `\fbox` is only looked for when no `\boxed` exists at all.
        assert_eq!(extract_answer("\\fbox{5} \\boxed{6}"), Ok("6"));
    }

    #[test]
    fn empty_box_is_empty_answer() {
        assert_eq!(extract_answer("\\boxed{}"), Ok(""));
    }
}
