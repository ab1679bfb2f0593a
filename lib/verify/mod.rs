//! Scoring responses. Beside the paper's verifier (below, the default): [`gsm8k`] (verl's GSM8K
//! scorer), [`scorer`] (users' scorer programs over a JSON-lines protocol) and [`dispatch`]
//! (which scorer takes which data source); each gives a [`Scored`] row.
//!
//! The reference answer verifier (REFERENCE.md §5): verl's
//! `conrl_reward.compute_score`, ported to Rust bit for bit where we could read
//! the Python, so rewards match the paper's without a Python process.
//!
//! Pipeline, one submodule per upstream piece:
//!
//! 1. [`extract`]: text after the last `</think>`; Hendrycks'
//!    `last_boxed_only_string` (last `\boxed`, else last `\fbox`, brace counting)
//!    and verl's `remove_boxed` (must be `\boxed{...}`: `\fbox`, `\boxed {..}`
//!    and unclosed braces score 0).
//! 2. Multiple choice (data sources starting with `conrl/mmlu`, `conrl/gpqa`,
//!    `conrl/arc_c`, `conrl/truthfulqa`, `conrl/winogrande`, `conrl/bbh`,
//!    `conrl/commonsense_qa`): the boxed text up to its first `.`, trimmed, must
//!    equal the letter exactly (`B`, `B. text` pass; `(B)`, `\text{B}`, `b` fail).
//! 3. Everything else: PRM800K's `grade_answer(given, ground_truth)` (a ground
//!    truth containing `\boxed` is first reduced to its boxed content):
//!    [`mathd`] (Hendrycks `_strip_string`) equality, else [`grader`]
//!    (`_normalize`, with [`latex`] standing in for pylatexenc's
//!    `latex_to_text`; tuples; unreduced fractions never match; an integer never
//!    matches a non-integer) and finally the sympy check, done by [`expr`].
//!
//! What [`expr`] covers instead of sympy: integers, decimals (as sympy Floats,
//! rounding and sympy's wider precision for 16+ digit literals included),
//! fractions, `sqrt`, powers, `pi`, `ln`, factorial, parentheses, unary minus,
//! sympy's implicit multiplication / application and symbol splitting (`2x`,
//! `2(3)`, `xy`, `2sqrt(3)`, `sqrt2` = `s*q*r*t*2`), and up to two free symbols
//! (compared at random complex points). Known differences from the reference
//! (details in [`expr`] and [`latex`]):
//!
//! - identities that sympy's `simplify` cannot prove still count as equal;
//! - Float rounding inside symbolic or irrational terms is ignored
//!   (`0.1x+0.2x-0.3x` counts as zero; sympy leaves `5.6e-17*x`);
//! - integers beyond i128 fall back to f64 (factorials above 33! fail), so e.g.
//!   `100! + --101` is not recognised as `100! + 101`;
//! - sympy functions other than `sqrt` and `ln` make the comparison fail;
//! - pylatexenc: accents are not NFC-composed, callable macro specs other than
//!   accents and math alphabets render as nothing, Python's recursion limit is
//!   approximated by a frame budget;
//! - Python's `float()` / `isdigit()` on non-ASCII digits are approximated;
//! - a ground truth containing `\boxed` whose box cannot be extracted is used
//!   whole (the reference's behaviour there is not documented).
//!
//! Reference versions the harness checks against: Python 3.11, sympy 1.14.0,
//! pylatexenc 2.11 (`scripts/verify_agreement.py`; agreement on 207,527 generated
//! responses over every test ground truth: 100.00%).
//!
//! The module uses only `std` and `regex`, never panics on any input, and runs in
//! time linear in the response (explicit counters instead of recursion for
//! braces; nesting limits where Python itself would raise, scoring as Python's
//! `except` branches do).

pub mod dispatch;
pub mod expr;
pub mod extract;
pub mod grader;
pub mod gsm8k;
pub mod latex;
mod latex_table;
pub mod mathd;
pub mod pystr;
pub mod scorer;

/// Why a response got its score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// No `\boxed` (nor `\fbox`) in the scored text.
    NoBoxed,
    /// The last box's braces never close.
    UnclosedBrace,
    /// The last box is an `\fbox{..}` (located, then rejected).
    Fbox,
    /// The last `\boxed` is not directly followed by `{` (e.g. `\boxed {5}`).
    MalformedBox,
    /// Equal after Hendrycks or PRM800K string normalisation.
    NormalizedMatch,
    /// Equal by the sympy check (element-wise for tuples).
    SymbolicMatch,
    /// A math answer that does not match.
    Mismatch,
    /// Multiple choice: the letter matches.
    ChoiceMatch,
    /// Multiple choice: the letter does not match.
    ChoiceMismatch,
}

impl Reason {
    /// Every reason the reference verifier gives.
    pub const ALL: [Reason; 9] = [
        Reason::NoBoxed,
        Reason::UnclosedBrace,
        Reason::Fbox,
        Reason::MalformedBox,
        Reason::NormalizedMatch,
        Reason::SymbolicMatch,
        Reason::Mismatch,
        Reason::ChoiceMatch,
        Reason::ChoiceMismatch,
    ];

    /// The snake_case name, for logs and Parquet columns.
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::NoBoxed => "no_boxed",
            Reason::UnclosedBrace => "unclosed_brace",
            Reason::Fbox => "fbox",
            Reason::MalformedBox => "malformed_box",
            Reason::NormalizedMatch => "normalized_match",
            Reason::SymbolicMatch => "symbolic_match",
            Reason::Mismatch => "mismatch",
            Reason::ChoiceMatch => "choice_match",
            Reason::ChoiceMismatch => "choice_mismatch",
        }
    }
}

/// The verifier's answer for one response.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The boxed text the reference extracted (`None` when extraction failed).
    pub extracted: Option<String>,
    /// Whether the reference scores the response correct.
    pub correct: bool,
    /// The reward: 1.0 if correct, else 0.0.
    pub score: f32,
    /// Why.
    pub reason: Reason,
}

/// What any scorer (this verifier, verl's gsm8k, a user's program) says about one response:
/// one row of the rewards table.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// The answer as the scorer read it, if it says.
    pub extracted: Option<String>,
    /// The label the contrastive reward uses.
    pub correct: bool,
    /// The reward GRPO uses, as it is (any finite value).
    pub score: f32,
    /// Why, in a word or two (counted by `clipo-verify --summary`).
    pub reason: String,
    /// Further keys a scorer program answered, as one JSON object.
    pub extra: Option<String>,
}

/// The score `conrl-format` gives a wrong answer in a well-formed, non-empty `\boxed{}` (reason
/// `mismatch` or `choice_mismatch`; an empty box, as in an echo of the instruction "within
/// \boxed{}", gets nothing): a tenth of a correct answer's, so a wrong answer never outranks a right
/// one, while a group in which nothing is right still prefers the responses that kept the
/// format. Not in the paper (REFERENCE.md §5 scores 1 or 0); a format reward in the manner of
/// DeepSeek-R1's, for small models that rarely box their answer at first (the README's
/// SmolLM2 recipe).
pub const FORMAT_SCORE: f32 = 0.1;

/// The paper's verdict with the format reward: [`FORMAT_SCORE`] instead of 0 for a wrong answer
/// in a well-formed, non-empty box; correctness, the extracted answer and the reason are
/// unchanged.
pub fn with_format_reward(v: Verdict) -> Verdict {
    let answered = v.extracted.as_deref().is_some_and(|e| !e.trim().is_empty());
    let boxed_but_wrong = answered && matches!(v.reason, Reason::Mismatch | Reason::ChoiceMismatch);
    Verdict { score: if boxed_but_wrong { FORMAT_SCORE } else { v.score }, ..v }
}

impl From<Verdict> for Scored {
    fn from(v: Verdict) -> Scored {
        Scored { extracted: v.extracted, correct: v.correct, score: v.score, reason: v.reason.as_str().into(), extra: None }
    }
}

/// Data-source prefixes scored by exact letter match.
const MULTIPLE_CHOICE_PREFIXES: [&str; 7] = [
    "conrl/mmlu",
    "conrl/gpqa",
    "conrl/arc_c",
    "conrl/truthfulqa",
    "conrl/winogrande",
    "conrl/bbh",
    "conrl/commonsense_qa",
];

/// Whether `data_source` is scored as multiple choice (letter match).
pub fn is_multiple_choice(data_source: &str) -> bool {
    MULTIPLE_CHOICE_PREFIXES.iter().any(|p| data_source.starts_with(p))
}

fn verdict(extracted: Option<&str>, correct: bool, reason: Reason) -> Verdict {
    Verdict {
        extracted: extracted.map(str::to_string),
        correct,
        score: if correct { 1.0 } else { 0.0 },
        reason,
    }
}

/// Scores `response` against `ground_truth` exactly as the reference does.
pub fn compute_score(data_source: &str, response: &str, ground_truth: &str) -> Verdict {
    let answer = match extract::extract_answer(response) {
        Ok(a) => a,
        Err(e) => {
            let reason = match e {
                extract::ExtractError::NoBoxed => Reason::NoBoxed,
                extract::ExtractError::Unclosed => Reason::UnclosedBrace,
                extract::ExtractError::Fbox => Reason::Fbox,
                extract::ExtractError::Malformed => Reason::MalformedBox,
            };
            return verdict(None, false, reason);
        }
    };
    if is_multiple_choice(data_source) {
        let letter = pystr::strip(answer.split('.').next().unwrap_or(""));
        let ok = letter == pystr::strip(ground_truth);
        return verdict(Some(answer), ok, if ok { Reason::ChoiceMatch } else { Reason::ChoiceMismatch });
    }
    let gt = if ground_truth.contains("\\boxed") {
        extract::last_boxed_only_string(ground_truth)
            .and_then(extract::remove_boxed)
            .unwrap_or(ground_truth)
    } else {
        ground_truth
    };
    let (ok, reason) = match grader::grade_answer(answer, gt) {
        grader::Grade::MathdEqual | grader::Grade::NormalizedEqual => (true, Reason::NormalizedMatch),
        grader::Grade::Symbolic => (true, Reason::SymbolicMatch),
        grader::Grade::Wrong => (false, Reason::Mismatch),
    };
    verdict(Some(answer), ok, reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(ds: &str, resp: &str, gt: &str) -> (bool, Reason) {
        let v = compute_score(ds, resp, gt);
        (v.correct, v.reason)
    }

    use proptest::strategy::Strategy;

    const MATH: &str = "conrl/math";
    /// Pieces the property test glues into responses.
    const FRAGMENTS: [&str; 44] = [
        "\\boxed{", "\\boxed", "\\fbox{", "{", "}", "\\", "\\frac", "\\dfrac", "\\sqrt", "\\sqrt[", "]",
        "</think>", "^", "^{", "(", ")", "[", "1", "23", "0.5", "x", "i", ".", ",", "$", "\\%", "\\text{ ",
        "\\left(", "\\right)", "\\begin{pmatrix}", "\\end{pmatrix}", "&", "\\(", "\\)", "\n", "é", "√",
        "sqrt", "pi", "!", "**", "e5", " or ", "-",
    ];
    const MMLU: &str = "conrl/mmlu2k";

    #[test]
    fn last_box_wins() {
        assert_eq!(score(MATH, "\\boxed{3} no wait \\boxed{4}", "4"), (true, Reason::NormalizedMatch));
        assert_eq!(score(MATH, "\\boxed{4} no wait \\boxed{3}", "4"), (false, Reason::Mismatch));
    }

    #[test]
    fn fbox_unclosed_malformed_score_zero() {
        assert_eq!(score(MATH, "\\fbox{4}", "4"), (false, Reason::Fbox));
        assert_eq!(score(MATH, "\\boxed{4", "4"), (false, Reason::UnclosedBrace));
        assert_eq!(score(MATH, "\\boxed {4}", "4"), (false, Reason::MalformedBox));
        assert_eq!(score(MATH, "4", "4"), (false, Reason::NoBoxed));
    }

    #[test]
    fn think_prefix() {
        assert!(score(MATH, "<think>\\boxed{4}</think>The answer is \\boxed{5}", "5").0);
        assert_eq!(score(MATH, "<think>\\boxed{5}</think>The answer is 5", "5"), (false, Reason::NoBoxed));
    }

    #[test]
    fn integer_strictness_and_fractions() {
        assert!(!score(MATH, "\\boxed{12.5}", "12").0);
        assert!(score(MATH, "\\boxed{12.0}", "12").0);
        assert!(score(MATH, "\\boxed{1,000}", "1000").0);
        assert!(!score(MATH, "\\boxed{\\frac{2}{4}}", "\\frac{1}{2}").0);
        assert!(score(MATH, "\\boxed{0.5}", "\\frac{1}{2}").0);
        assert!(score(MATH, "\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}").0);
        assert_eq!(score(MATH, "\\boxed{\\sqrt{3}/2}", "\\frac{\\sqrt{3}}{2}"), (true, Reason::NormalizedMatch));
        assert_eq!(score(MATH, "\\boxed{\\frac{1}{2}\\sqrt{3}}", "\\frac{\\sqrt{3}}{2}"), (true, Reason::SymbolicMatch));
    }

    #[test]
    fn multiple_choice_letters() {
        assert_eq!(score(MMLU, "\\boxed{B}", "B"), (true, Reason::ChoiceMatch));
        assert_eq!(score(MMLU, "\\boxed{B. Paris}", "B"), (true, Reason::ChoiceMatch));
        assert_eq!(score(MMLU, "\\boxed{ B }", "B"), (true, Reason::ChoiceMatch));
        assert_eq!(score(MMLU, "\\boxed{(B)}", "B"), (false, Reason::ChoiceMismatch));
        assert_eq!(score(MMLU, "\\boxed{\\text{B}}", "B"), (false, Reason::ChoiceMismatch));
        assert_eq!(score(MMLU, "\\boxed{b}", "B"), (false, Reason::ChoiceMismatch));
        assert!(is_multiple_choice("conrl/commonsense_qa"));
        assert!(!is_multiple_choice("conrl/math"));
    }

    #[test]
    fn boxed_ground_truth_is_reduced() {
        assert!(score(MATH, "\\boxed{7}", "so the answer is $\\boxed{7}$.").0);
    }

    #[test]
    fn the_format_reward_scores_a_boxed_wrong_answer_only() {
        let f = |resp: &str| with_format_reward(compute_score(MATH, resp, "7"));
        assert_eq!((f("so \\boxed{7}").score, f("so \\boxed{7}").correct), (1.0, true));
        assert_eq!((f("so \\boxed{8}").score, f("so \\boxed{8}").correct), (FORMAT_SCORE, false));
        assert_eq!(f("so 7").score, 0.0);
        assert_eq!(f("so \\boxed{7").score, 0.0, "an unclosed box is not the format");
        assert_eq!(f("the answer within \\boxed{}.").score, 0.0, "an empty box is no answer");
        assert_eq!(f("so \\boxed{8}").reason, Reason::Mismatch);
    }

    #[test]
    fn reason_names() {
        assert_eq!(Reason::NoBoxed.as_str(), "no_boxed");
        assert_eq!(Reason::SymbolicMatch.as_str(), "symbolic_match");
        assert_eq!(Reason::ChoiceMismatch.as_str(), "choice_mismatch");
        let names: std::collections::BTreeSet<&str> = Reason::ALL.iter().map(Reason::as_str).collect();
        assert_eq!(names.len(), Reason::ALL.len(), "ALL lists each reason once");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(FRAGMENTS.to_vec()).prop_map(str::to_string),
                    "\\PC{0,6}",
                ],
                0..40,
            ),
            gt_parts in proptest::collection::vec(proptest::sample::select(FRAGMENTS.to_vec()), 0..8),
            mc in proptest::bool::ANY,
        ) {
            let response = parts.concat();
            let gt = gt_parts.concat();
            let ds = if mc { MMLU } else { MATH };
            let v = compute_score(ds, &response, &gt);
            proptest::prop_assert_eq!(v.score, if v.correct { 1.0 } else { 0.0 });
            // the answer as its own ground truth, and the pieces one by one
            let _ = compute_score(MATH, &format!("\\boxed{{{response}}}"), &response);
            let _ = grader::normalize(&response);
            let _ = latex::latex_to_text(&response);
            let _ = expr::sympy_diff_is_zero(&response);
        }
    }

    /// Each pathological input must be scored in linear time: well under a
    /// second in release (the asserted limit leaves room for loaded machines).
    #[test]
    fn pathological_inputs_are_fast() {
        // generous against shared, loaded CI machines; idle release timings are
        // 1-150 ms (see the printed lines)
        let limit = if cfg!(debug_assertions) { 60.0 } else { 2.0 };
        let check = |name: &str, resp: String, gt: &str, want: bool| {
            let t = std::time::Instant::now();
            let v = compute_score(MATH, &resp, gt);
            let secs = t.elapsed().as_secs_f64();
            println!("{name}: {} bytes, {secs:.3} s, {}", resp.len(), v.reason.as_str());
            assert_eq!(v.correct, want, "{name}");
            assert!(secs < limit, "{name} took {secs:.3} s");
        };
        check("10 MB response", format!("{}\\boxed{{42}}", "lorem ipsum ".repeat(10 * 1024 * 1024 / 12)), "42", true);
        check("100k nested braces", format!("\\boxed{{{}x{}}}", "{".repeat(100_000), "}".repeat(100_000)), "1", false);
        check("100k nested \\frac", format!("\\boxed{{{}x{}}}", "\\frac{".repeat(100_000), "}{2}".repeat(100_000)), "1", false);
        check("100k nested parens", format!("\\boxed{{{}1{}}}", "(".repeat(100_000), ")".repeat(100_000)), "2", false);
        check("1M \\boxed", "\\boxed".repeat(1_000_000), "1", false);
        check("1M \\boxed{", "\\boxed{".repeat(1_000_000), "1", false);
        check("1M \\boxed{1}", "\\boxed{1}".repeat(1_000_000), "1", true);
        // these two reach the sympy step (the ground truth is not an integer)
        check("400 kB sum", format!("\\boxed{{{}}}", "1+".repeat(200_000) + "1"), "1/2", false);
        check("240 kB of \\frac", format!("\\boxed{{{}}}", "\\frac{1}{2}+".repeat(20_000) + "1"), "1/2", false);
        check("2 MB box", format!("\\boxed{{{}}}", "7".repeat(2 * 1024 * 1024)), "7", false);
    }
}
