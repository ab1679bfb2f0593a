//! The step checker of the embedded task: was a correct answer reached by the problem's steps,
//! or by luck?
//!
//! CLIPO's claim (REFERENCE.md §4, the paper's motivation) is that RLVR rewards "process-wrong
//! but outcome-correct" rollouts and that the contrastive reward suppresses them. The embedded
//! task ([`crate::task`]) knows every intermediate quantity of every problem, so each response
//! can be sorted:
//!
//! - `process_correct`: the final answer is correct (the verifier's label) and the response
//!   states every step of the problem and no wrong one;
//! - `lucky`: the final answer is correct, but a stated step is wrong or a required step is
//!   missing;
//! - `wrong`: the final answer is not correct.
//!
//! **Steps.** The required steps are the reference solution's equations, one per operation:
//! `v[k-1] + b = v[k]` or `v[k-1] - b = v[k]` ([`crate::task::Steps::equations`]); an addition
//! may be stated either way round (`2 + 7 = 9`). A response's stated equations are every
//! `N op N (op N)* = N` in its text (whitespace free, `-` before the result allowed; a result
//! may start the next equation, `7 + 2 = 9 - 4 = 5`). A stated equation with one operation must
//! be one of the problem's steps, else it is a wrong step: wrong arithmetic, a wrong operand or
//! operation, a quantity the problem does not have (a distractor's count). A chain of several
//! operations is not wrong when it is the composition of consecutive steps (`7 + 2 - 4 = 5`),
//! but it states none of them: the intermediate quantity it skips is missing. Steps may be
//! stated in any order and repeated. A stated start (`starts with N`, the reference's first
//! sentence) must be the problem's start. Names and items are not quantities and are not
//! checked.

use crate::task::{parse_question, Equation, Steps};

/// How a response reached its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Process {
    /// Correct answer, every step stated and none wrong.
    ProcessCorrect,
    /// Correct answer, a stated step wrong or a required step missing.
    Lucky,
    /// Wrong answer.
    Wrong,
}

impl Process {
    /// The name in tables and summaries: `process_correct`, `lucky`, `wrong`.
    pub fn as_str(self) -> &'static str {
        match self {
            Process::ProcessCorrect => "process_correct",
            Process::Lucky => "lucky",
            Process::Wrong => "wrong",
        }
    }

    pub fn parse(s: &str) -> Option<Process> {
        [Process::ProcessCorrect, Process::Lucky, Process::Wrong].into_iter().find(|p| p.as_str() == s)
    }
}

/// The checker's verdict on one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub process: Process,
    /// What is wrong with the steps, `; `-separated (`wrong step 7 + 2 = 8; missing step
    /// 7 + 2 = 9`); empty when every step is stated and none is wrong (also for a wrong
    /// answer whose steps are right: the slip is then in the final answer).
    pub detail: String,
}

/// The version of these rules, recorded in the rewards table's provenance (a change of the
/// rules makes clipo-verify recompute).
pub const RULES: &str = "clipo/arith steps 1";

/// An equation as stated: the terms, the operations between them (true: `+`) and the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated {
    pub terms: Vec<i64>,
    pub adds: Vec<bool>,
    pub result: i64,
}

impl std::fmt::Display for Stated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.terms[0])?;
        for (t, add) in self.terms[1..].iter().zip(&self.adds) {
            write!(f, " {} {t}", if *add { "+" } else { "-" })?;
        }
        write!(f, " = {}", self.result)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    /// A run of ASCII digits; None when it does not fit an i64.
    Num(Option<i64>),
    Plus,
    Minus,
    Eq,
    Other,
}

fn tokens(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '0'..='9' => {
                let mut j = i + 1;
                while let Some(&(k, d)) = chars.peek() {
                    if !d.is_ascii_digit() {
                        break;
                    }
                    j = k + 1;
                    chars.next();
                }
                out.push(Tok::Num(text[i..j].parse().ok()));
            }
            '+' => out.push(Tok::Plus),
            '-' => out.push(Tok::Minus),
            '=' => out.push(Tok::Eq),
            _ => out.push(Tok::Other),
        }
    }
    out
}

/// Every equation `N op N (op N)* = N` stated in `text`, in order.
pub fn stated_equations(text: &str) -> Vec<Stated> {
    let toks = tokens(text);
    let num = |i: usize| match toks.get(i) {
        Some(Tok::Num(v)) => Some(*v),
        _ => None,
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let Some(first) = num(i) else {
            i += 1;
            continue;
        };
        let (mut terms, mut adds, mut j) = (vec![first], vec![], i + 1);
        while let (Some(op @ (Tok::Plus | Tok::Minus)), Some(t)) = (toks.get(j), num(j + 1)) {
            adds.push(*op == Tok::Plus);
            terms.push(t);
            j += 2;
        }
        if adds.is_empty() || toks.get(j) != Some(&Tok::Eq) {
            i += 1;
            continue;
        }
        let negative = toks.get(j + 1) == Some(&Tok::Minus);
        let at = j + 1 + usize::from(negative);
        let Some(result) = num(at) else {
            i += 1;
            continue;
        };
        // A number too long for an i64 is no quantity of this task: the equation is skipped.
        if let (Some(terms), Some(result)) = (terms.into_iter().collect::<Option<Vec<i64>>>(), result) {
            out.push(Stated { terms, adds, result: if negative { -result } else { result } });
        }
        // The result may begin the next equation (`7 + 2 = 9 - 4 = 5`).
        i = at;
    }
    out
}

/// Every `starts with N` stated in `text` (the reference solution's first sentence).
pub fn stated_starts(text: &str) -> Vec<i64> {
    text.match_indices("starts with ")
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let digits: &str = &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())];
            digits.parse().ok()
        })
        .collect()
}

fn is_step(s: &Stated, e: &Equation) -> bool {
    if s.adds != [e.add] || s.result != e.c {
        return false;
    }
    let (x, y) = (s.terms[0], s.terms[1]);
    (x, y) == (e.a, e.b) || (e.add && (y, x) == (e.a, e.b))
}

/// Whether a chain of several operations is the composition of consecutive steps.
fn is_chain_of_steps(s: &Stated, eqs: &[Equation]) -> bool {
    let n = s.adds.len();
    (0..eqs.len().saturating_sub(n - 1)).any(|i| {
        let run = &eqs[i..i + n];
        s.terms[0] == run[0].a
            && run.iter().zip(&s.adds).zip(&s.terms[1..]).all(|((e, &add), &t)| e.add == add && e.b == t)
            && s.result == run[n - 1].c
    })
}

/// Sort one response, given the problem's steps and the verifier's label.
pub fn check(steps: &Steps, response: &str, correct: bool) -> Verdict {
    let eqs = steps.equations();
    let mut stated_ok = vec![false; eqs.len()];
    let mut problems = Vec::new();
    for start in stated_starts(response) {
        if start != i64::from(steps.start) {
            problems.push(format!("wrong start {start} (the start is {})", steps.start));
        }
    }
    for s in stated_equations(response) {
        if s.adds.len() == 1 {
            match eqs.iter().position(|e| is_step(&s, e)) {
                Some(k) => stated_ok[k] = true,
                None => problems.push(format!("wrong step {s}")),
            }
        } else if !is_chain_of_steps(&s, &eqs) {
            problems.push(format!("wrong step {s}"));
        }
    }
    for (e, ok) in eqs.iter().zip(&stated_ok) {
        if !ok {
            problems.push(format!("missing step {e}"));
        }
    }
    let process = match (correct, problems.is_empty()) {
        (false, _) => Process::Wrong,
        (true, true) => Process::ProcessCorrect,
        (true, false) => Process::Lucky,
    };
    Verdict { process, detail: problems.join("; ") }
}

/// The verdict on a response to a prompt of the embedded task (`data_source` starting with
/// `clipo/arith`) whose text holds the question; `None` for any other data source or a
/// question that does not parse.
pub fn check_prompt(data_source: &str, prompt_text: &str, response: &str, correct: bool) -> Option<Verdict> {
    if !data_source.starts_with(crate::task::DATA_SOURCE_PREFIX) {
        return None;
    }
    Some(check(&parse_question(prompt_text)?, response, correct))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mia has 7 shells, finds 2, gives 4 away; Tom's 3 pens are a distractor.
    const QUESTION: &str = "Mia has 7 shells. She finds 2 more shells. Tom has 3 pens. She gives 4 shells to Leo. How many shells does Mia have now?";

    fn verdict(response: &str, correct: bool) -> (Process, String) {
        let v = check_prompt("clipo/arith_p2", QUESTION, response, correct).expect("the question parses");
        (v.process, v.detail)
    }

    #[test]
    fn the_reference_solution_is_process_correct() {
        let ok = "Mia starts with 7 shells. 7 + 2 = 9. 9 - 4 = 5. The answer is \\boxed{5}.";
        assert_eq!(verdict(ok, true), (Process::ProcessCorrect, String::new()));
        // The addition the other way round, no first sentence, other spacing.
        assert_eq!(verdict("2+7=9, then 9 -4= 5 \\boxed{5}", true), (Process::ProcessCorrect, String::new()));
        // Right steps, then a slip in the boxed answer: wrong, and no step to blame.
        assert_eq!(verdict("Mia starts with 7 shells. 7 + 2 = 9. 9 - 4 = 5. The answer is \\boxed{6}.", false), (Process::Wrong, String::new()));
    }

    #[test]
    fn a_wrong_step_with_the_right_answer_is_lucky() {
        // 7 + 2 = 8 is wrong arithmetic, 8 - 4 = 5 then lands on the answer.
        let r = "Mia starts with 7 shells. 7 + 2 = 8. 8 - 4 = 5. The answer is \\boxed{5}.";
        assert_eq!(
            verdict(r, true),
            (Process::Lucky, "wrong step 7 + 2 = 8; wrong step 8 - 4 = 5; missing step 7 + 2 = 9; missing step 9 - 4 = 5".into())
        );
        // The same steps with a wrong answer: wrong.
        assert_eq!(verdict("7 + 2 = 8. 8 - 4 = 4. \\boxed{4}", false).0, Process::Wrong);
        // Right arithmetic on a wrong operand (the model swapped 4 for 5 and back).
        assert_eq!(verdict("7 + 2 = 9. 9 - 5 = 4. 4 + 1 = 5. \\boxed{5}", true).1, "wrong step 9 - 5 = 4; wrong step 4 + 1 = 5; missing step 9 - 4 = 5");
        // A wrong start, every equation right.
        assert_eq!(verdict("Mia starts with 6 shells. 7 + 2 = 9. 9 - 4 = 5. \\boxed{5}", true), (Process::Lucky, "wrong start 6 (the start is 7)".into()));
    }

    #[test]
    fn a_missing_step_with_the_right_answer_is_lucky() {
        assert_eq!(verdict("Mia starts with 7 shells. 9 - 4 = 5. The answer is \\boxed{5}.", true), (Process::Lucky, "missing step 7 + 2 = 9".into()));
        assert_eq!(verdict("The answer is \\boxed{5}.", true), (Process::Lucky, "missing step 7 + 2 = 9; missing step 9 - 4 = 5".into()));
        // A chain of both operations is not wrong, but skips the quantity 9.
        assert_eq!(verdict("7 + 2 - 4 = 5. \\boxed{5}", true), (Process::Lucky, "missing step 7 + 2 = 9; missing step 9 - 4 = 5".into()));
        // A chain that is not the problem's is a wrong step.
        assert_eq!(verdict("7 + 3 - 5 = 5. \\boxed{5}", true).1, "wrong step 7 + 3 - 5 = 5; missing step 7 + 2 = 9; missing step 9 - 4 = 5");
    }

    #[test]
    fn extra_and_repeated_steps() {
        // Repeated steps, out of order, and a chain restating them: nothing is wrong.
        let r = "7 + 2 = 9. 7 + 2 = 9. 9 - 4 = 5. 9 - 4 = 5. So 7 + 2 - 4 = 5. \\boxed{5}";
        assert_eq!(verdict(r, true), (Process::ProcessCorrect, String::new()));
        assert_eq!(verdict("9 - 4 = 5 after 7 + 2 = 9. \\boxed{5}", true).0, Process::ProcessCorrect);
        // An extra step with the distractor's 3 pens, undone again: a quantity the problem
        // does not have, so lucky.
        let r = "7 + 2 = 9. 9 + 3 = 12. 12 - 3 = 9. 9 - 4 = 5. \\boxed{5}";
        assert_eq!(verdict(r, true), (Process::Lucky, "wrong step 9 + 3 = 12; wrong step 12 - 3 = 9".into()));
        // Chained equals: 7 + 2 = 9 - 4 = 5 states both steps.
        assert_eq!(verdict("7 + 2 = 9 - 4 = 5 \\boxed{5}", true).0, Process::ProcessCorrect);
    }

    #[test]
    fn equations_are_read_from_noisy_text() {
        let s = stated_equations("Tom starts with 6 coins. 6 + 3 = 9. TElla 5 -Jack 1 - 5 = -4. 10 + 4 = 14.The x2+1=3 99999999999999999999 + 1 = 2");
        let shown: Vec<String> = s.iter().map(|e| e.to_string()).collect();
        assert_eq!(shown, ["6 + 3 = 9", "1 - 5 = -4", "10 + 4 = 14", "2 + 1 = 3"]);
        assert_eq!(stated_starts("Tom starts with 6 coins. Mia starts with 12 pens, starts with x"), vec![6, 12]);
        // Not the task's data source, or no question: no verdict.
        assert_eq!(check_prompt("conrl/gsm8k", QUESTION, "\\boxed{5}", true), None);
        assert_eq!(check_prompt("clipo/arith", "What is 2 + 3?", "\\boxed{5}", true), None);
        assert_eq!(Process::parse("lucky"), Some(Process::Lucky));
        assert_eq!(Process::parse("nope"), None);
    }
}
