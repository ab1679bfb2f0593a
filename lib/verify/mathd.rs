//! Hendrycks MATH normalisation (REFERENCE.md §5, check (a)): PRM800K's
//! `math_normalize.normalize_answer`, i.e. `_strip_string`, step for step.
//!
//! Where the Python raises (an `\sqrt` or `\frac` at the very end, two `\text{ `
//! unit markers) `normalize_answer` returns its input unchanged; the steps below
//! return `None` at those points so the caller can do the same.

use std::sync::OnceLock;

use regex::Regex;

use super::pystr;

/// `normalize_answer(answer)`: strip, drop an enclosing `\text{..}`, `_strip_string`.
pub fn normalize_answer(answer: &str) -> String {
    static TEXT: OnceLock<Regex> = OnceLock::new();
    // Python: re.search("^\\\\text\{(?P<text>.+?)\}$", answer); `answer` is stripped,
    // so `$` can only match at the very end.
    let text = TEXT.get_or_init(|| Regex::new(r"\A\\text\{(.+?)\}\z").expect("static regex"));
    let mut answer = pystr::strip(answer).to_string();
    let captured = if answer.starts_with("\\text{") { text.captures(&answer) } else { None };
    if let Some(c) = captured {
        answer = pystr::strip(c.get(1).map_or("", |m| m.as_str())).to_string();
    }
    strip_string(&answer).unwrap_or(answer)
}

/// `_remove_right_units`: keep what precedes `\text{ `; two markers raise.
fn remove_right_units(s: String) -> Option<String> {
    const MARK: &str = "\\text{ ";
    match s.find(MARK) {
        None => Some(s),
        Some(i) => {
            if s[i + MARK.len()..].contains(MARK) {
                None // `assert len(splits) == 2` fails
            } else {
                Some(s[..i].to_string())
            }
        }
    }
}

/// `_fix_sqrt`: `\sqrt3` -> `\sqrt{3}` (one character); `\sqrt` at the end raises.
fn fix_sqrt(s: String) -> Option<String> {
    if !s.contains("\\sqrt") {
        return Some(s);
    }
    let mut parts = s.split("\\sqrt");
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(parts.next().unwrap_or(""));
    for part in parts {
        let mut chars = part.chars();
        let first = chars.next()?; // split[0] on "" -> IndexError
        if first != '{' {
            out.push_str("\\sqrt{");
            out.push(first);
            out.push('}');
            out.push_str(chars.as_str());
        } else {
            out.push_str("\\sqrt");
            out.push_str(part);
        }
    }
    Some(out)
}

/// `_fix_fracs`: `\frac12` -> `\frac{1}{2}`, `\frac1{72}` -> `\frac{1}{72}`.
/// `None` = IndexError (empty piece); a one-character piece returns the input.
fn fix_fracs(s: String) -> Option<String> {
    let mut parts = s.split("\\frac");
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(parts.next().unwrap_or(""));
    for part in parts {
        out.push_str("\\frac");
        let mut chars = part.chars();
        let a = chars.next()?;
        if a == '{' {
            out.push_str(part);
            continue;
        }
        let b = match chars.next() {
            Some(b) => b,
            None => return Some(s), // `assert len(substr) >= 2` -> return string
        };
        let post = chars.as_str();
        out.push('{');
        out.push(a);
        if b != '{' {
            out.push_str("}{");
            out.push(b);
            out.push('}');
        } else {
            out.push('}');
            out.push(b);
        }
        out.push_str(post);
    }
    Some(out)
}

/// `str(int(x)) == x` for Python's `int()` on the pieces of `a/b`.
fn is_canonical_int(x: &str) -> bool {
    let digits = x.strip_prefix('-').unwrap_or(x);
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && x != "-0"
}

/// `_fix_a_slash_b`: `3/4` -> `\frac{3}{4}` when both sides are plain integers.
fn fix_a_slash_b(s: String) -> String {
    let mut it = s.split('/');
    let (a, b) = match (it.next(), it.next(), it.next()) {
        (Some(a), Some(b), None) => (a, b),
        _ => return s,
    };
    if is_canonical_int(a) && is_canonical_int(b) {
        format!("\\frac{{{a}}}{{{b}}}")
    } else {
        s
    }
}

/// `_strip_string`; `None` where the Python raises.
pub fn strip_string(s: &str) -> Option<String> {
    let mut s = s.to_string();
    pystr::replace_in(&mut s, "\n", "");
    pystr::replace_in(&mut s, "\\!", "");
    pystr::replace_in(&mut s, "\\\\", "\\");
    pystr::replace_in(&mut s, "tfrac", "frac");
    pystr::replace_in(&mut s, "dfrac", "frac");
    pystr::replace_in(&mut s, "\\left", "");
    pystr::replace_in(&mut s, "\\right", "");
    pystr::replace_in(&mut s, "^{\\circ}", "");
    pystr::replace_in(&mut s, "^\\circ", "");
    pystr::replace_in(&mut s, "\\$", "");
    s = remove_right_units(s)?;
    pystr::replace_in(&mut s, "\\%", "");
    pystr::replace_in(&mut s, " .", " 0.");
    pystr::replace_in(&mut s, "{.", "{0.");
    if s.is_empty() {
        return Some(s);
    }
    if s.starts_with('.') {
        s.insert(0, '0');
    }
    // "k = 3" -> " 3" when exactly one '=' and at most 2 characters before it.
    if let Some(eq) = s.find('=') {
        if !s[eq + 1..].contains('=') && s[..eq].chars().count() <= 2 {
            s = s[eq + 1..].to_string();
        }
    }
    s = fix_sqrt(s)?;
    pystr::replace_in(&mut s, " ", "");
    s = fix_fracs(s)?;
    if s == "0.5" {
        s = "\\frac{1}{2}".to_string();
    }
    Some(fix_a_slash_b(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> String {
        normalize_answer(s)
    }

    #[test]
    fn fracs_and_sqrt() {
        assert_eq!(n("\\dfrac12"), "\\frac{1}{2}");
        assert_eq!(n("\\frac1{72}"), "\\frac{1}{72}");
        assert_eq!(n("\\sqrt3"), "\\sqrt{3}");
        assert_eq!(n("3/4"), "\\frac{3}{4}");
        assert_eq!(n("0.5"), "\\frac{1}{2}");
        assert_eq!(n(".5"), "\\frac{1}{2}");
        assert_eq!(n("03/4"), "03/4");
    }

    #[test]
    fn decorations() {
        assert_eq!(n("\\text{Evelyn}"), "Evelyn");
        assert_eq!(n("90^\\circ"), "90");
        assert_eq!(n("\\$18.90"), "18.90");
        assert_eq!(n("5\\%"), "5");
        assert_eq!(n("x = 5"), "5");
        assert_eq!(n("5 \\text{ cm}"), "5");
        assert_eq!(n("\\left( 3, \\frac{\\pi}{2} \\right)"), "(3,\\frac{\\pi}{2})");
    }

    #[test]
    fn python_exceptions_return_input() {
        assert_eq!(n("2\\sqrt"), "2\\sqrt");
        assert_eq!(n(" 1\\frac"), "1\\frac");
        assert_eq!(n("1 \\text{ a}\\text{ b}"), "1 \\text{ a}\\text{ b}");
        // one-character piece after \frac: _fix_fracs returns its input
        assert_eq!(n("\\frac1"), "\\frac1");
    }
}
