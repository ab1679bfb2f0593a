//! verl's built-in GSM8K scorer (`verl/utils/reward_score/gsm8k.py`, the one verl's
//! `default_compute_score` calls for `openai/gsm8k`), ported line for line.
//!
//! - Only the last 300 characters (Unicode code points, as Python's `len`) of the response are
//!   read (verl's `_SOLUTION_CLIP_CHARS`).
//! - **strict** (verl's default): the last match of `#### (-?[0-9.,]+)` (one space after the
//!   hashes), with `,` and `$` removed.
//! - **flexible**: the last match of `(-?[0-9.,]+)` that is not `.` (commas kept, as verl keeps
//!   them); when every match is `.`, the first match, as Python's loop variable leaves it.
//! - Score: 1.0 when the extracted answer equals the ground truth as a string (no stripping, no
//!   number parsing), else `format_score` 0.0; 0.0 when nothing was extracted. These are verl's
//!   defaults (`format_score=0.0, score=1.0`), which its dispatcher never changes.
//!
//! Reasons: `no_answer` (nothing extracted), `exact_match`, `mismatch`.
//!
//! Checked against verl's Python (volcengine/verl b178a3c, 2026-01-29) once, by hand: 20,000
//! random responses built from `####`, digits, `,`, `.`, `-`, `$`, spaces, newlines, non-ASCII
//! and prefixes up to 400 characters, each method: score and extracted answer equal on every one
//! (`clipo-verify --scorer gsm8k` against verl's file served by scripts/verl_scorer.py).

use std::sync::LazyLock;

use regex::Regex;

use super::Scored;

/// verl's `_SOLUTION_CLIP_CHARS`.
pub const CLIP_CHARS: usize = 300;

/// How the answer is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `#### 72`: the format is part of the test (verl's default).
    Strict,
    /// The last number anywhere.
    Flexible,
}

static STRICT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#### (-?[0-9.,]+)").expect("valid regex"));
static FLEXIBLE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(-?[0-9.,]+)").expect("valid regex"));

/// verl's `extract_solution(solution_str, method)`.
pub fn extract_solution(solution: &str, method: Method) -> Option<String> {
    // solution_str[-300:] in code points.
    let clipped = match solution.char_indices().rev().nth(CLIP_CHARS - 1) {
        Some((at, _)) => &solution[at..],
        None => solution,
    };
    match method {
        Method::Strict => STRICT
            .captures_iter(clipped)
            .last()
            .map(|c| c[1].replace(',', "").replace('$', "")),
        Method::Flexible => {
            let found: Vec<&str> = FLEXIBLE.find_iter(clipped).map(|m| m.as_str()).collect();
            // `for final_answer in reversed(answer): if final_answer not in ['', '.']: break`
            found.iter().rev().find(|a| !matches!(**a, "" | ".")).or(found.first()).map(|a| a.to_string())
        }
    }
}

/// verl's `compute_score(solution_str, ground_truth, method)` with its default scores.
pub fn compute_score(solution: &str, ground_truth: &str, method: Method) -> Scored {
    let extracted = extract_solution(solution, method);
    let (score, reason) = match extracted.as_deref() {
        None => (0.0, "no_answer"),
        Some(a) if a == ground_truth => (1.0, "exact_match"),
        Some(_) => (0.0, "mismatch"),
    };
    Scored { extracted, correct: score > 0.0, score, reason: reason.into(), extra: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict(s: &str) -> Option<String> {
        extract_solution(s, Method::Strict)
    }
    fn flexible(s: &str) -> Option<String> {
        extract_solution(s, Method::Flexible)
    }

    /// Each case's expected value is what verl's Python returns (worked by hand from the code in
    /// the module doc).
    #[test]
    fn strict_takes_the_last_hash_answer() {
        assert_eq!(strict("so 3 + 4 = 7\n#### 7"), Some("7".into()));
        assert_eq!(strict("#### 1,000"), Some("1000".into()));
        assert_eq!(strict("#### -5.5 then #### 6"), Some("6".into()));
        assert_eq!(strict("####7"), None);
        assert_eq!(strict("####  7"), None);
        assert_eq!(strict("the answer is 7"), None);
        assert_eq!(strict("#### $7"), None);
        assert_eq!(strict("#### ."), Some(".".into()));
    }

    #[test]
    fn flexible_takes_the_last_number_but_not_a_lone_dot() {
        assert_eq!(flexible("3 apples and 4 pears: 7."), Some("7.".into()));
        assert_eq!(flexible("about 1,000 of them"), Some("1,000".into()));
        assert_eq!(flexible("12 then ."), Some("12".into()));
        // every match is `.`: the loop ends on the first one
        assert_eq!(flexible("a . b . c"), Some(".".into()));
        assert_eq!(flexible("no digits"), None);
        assert_eq!(flexible("x = -3"), Some("-3".into()));
    }

    #[test]
    fn only_the_last_300_characters_are_read() {
        let head = format!("#### 5 {}", "é".repeat(300));
        assert_eq!(strict(&head), None);
        let tail = format!("{}#### 5", "é".repeat(294));
        assert_eq!(tail.chars().count(), 300);
        assert_eq!(strict(&tail), Some("5".into()));
        let cut = format!("#{}", tail);
        assert_eq!(strict(&cut), Some("5".into()));
        // 301 characters: the first `#` is cut off and `### 5` no longer matches
        let cut = format!("#### 5{}", "x".repeat(295));
        assert_eq!(strict(&cut), None);
        assert_eq!(strict(&cut[..cut.len() - 1]), Some("5".into()));
    }

    #[test]
    fn scores_are_verls_defaults() {
        let s = compute_score("#### 72", "72", Method::Strict);
        assert_eq!((s.score, s.correct, s.reason.as_str(), s.extracted.as_deref()), (1.0, true, "exact_match", Some("72")));
        let s = compute_score("#### 72.0", "72", Method::Strict);
        assert_eq!((s.score, s.correct, s.reason.as_str()), (0.0, false, "mismatch"));
        let s = compute_score("72", "72", Method::Strict);
        assert_eq!((s.score, s.reason.as_str(), s.extracted), (0.0, "no_answer", None));
        assert_eq!(compute_score("it is 72", "72", Method::Flexible).score, 1.0);
        // no stripping of the ground truth
        assert_eq!(compute_score("#### 72", " 72", Method::Strict).score, 0.0);
    }
}
