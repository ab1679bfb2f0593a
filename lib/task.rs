//! The embedded task: arithmetic word problems in the style of GSM8K, small enough for a model
//! of a million parameters to learn on a CPU, with reference step-by-step solutions ending in
//! `\boxed{}`, a held-out split and two perturbed variants of it that mirror the paper's
//! GSM-P1/P2 robustness sets.
//!
//! A problem starts with a quantity (1..=max_number), applies `steps` additions or
//! subtractions (operands 1..=max_number, never going below zero), and asks for the result:
//!
//! ```text
//! Mia has 7 shells. She finds 2 more shells. She gives 4 shells to Leo.
//! How many shells does Mia have now?
//! Solution: Mia starts with 7 shells. 7 + 2 = 9. 9 - 4 = 5. The answer is \boxed{5}.
//! ```
//!
//! Splits (data sources): `clipo/arith` train and test (held out: no test question appears in
//! train), `clipo/arith_p1` (each test problem with other people, another item and new
//! numbers: same structure, new surface) and `clipo/arith_p2` (each test problem with one or
//! two distractor sentences about someone else's items).
//!
//! Every intermediate quantity of a problem is known: [`parse_question`] reads the arithmetic
//! ([`Steps`]: the start and each operation) back from the question's text, the inverse of the
//! phrasing below, so any table holding the prompt (a trajectories table's `prompt_text`)
//! carries the true steps with it; [`crate::stepcheck`] compares a response's stated steps
//! with them.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::prompts::{Message, Prompt};

/// The instruction the shared data sets end every prompt with (REFERENCE.md §5).
pub const INSTRUCTION: &str = "Let's think step by step and output the final answer within \\boxed{}.";

const NAMES: [(&str, &str); 12] = [
    ("Tom", "He"), ("Anna", "She"), ("Ben", "He"), ("Mia", "She"), ("Sam", "He"), ("Lily", "She"),
    ("Max", "He"), ("Emma", "She"), ("Leo", "He"), ("Zoe", "She"), ("Jack", "He"), ("Ella", "She"),
];
const ITEMS: [&str; 10] = ["apple", "pear", "book", "coin", "card", "ball", "pen", "shell", "egg", "cake"];

/// The data sources of the task's splits all start with this.
pub const DATA_SOURCE_PREFIX: &str = "clipo/arith";

/// The arithmetic of one problem: the starting quantity and each operation in order. The
/// reference solution states one equation per operation ([`Steps::equations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Steps {
    pub start: u32,
    /// (operand, is_addition), in the order the question tells them.
    pub ops: Vec<(u32, bool)>,
}

/// One equation of a solution: `a + b = c` or `a - b = c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Equation {
    pub a: i64,
    pub add: bool,
    pub b: i64,
    pub c: i64,
}

impl std::fmt::Display for Equation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {} = {}", self.a, if self.add { "+" } else { "-" }, self.b, self.c)
    }
}

impl Steps {
    /// The start, then the quantity after each operation; the last is the answer.
    pub fn values(&self) -> Vec<i64> {
        let mut v = vec![i64::from(self.start)];
        for &(b, add) in &self.ops {
            let last = *v.last().expect("start");
            v.push(if add { last + i64::from(b) } else { last - i64::from(b) });
        }
        v
    }

    /// The reference solution's equations, one per operation: `v[k-1] op b[k] = v[k]`.
    pub fn equations(&self) -> Vec<Equation> {
        let v = self.values();
        self.ops.iter().enumerate().map(|(k, &(b, add))| Equation { a: v[k], add, b: i64::from(b), c: v[k + 1] }).collect()
    }
}

/// The arithmetic of a question of this task, read back from text that contains it (the user
/// message, or a whole chat-templated `prompt_text`): the inverse of the generator's phrasing.
/// `None` when the text holds no such question or a sentence of it is not one the generator
/// writes. The question is found by its last sentence, `How many ITEMS does NAME have now?`;
/// its first sentence is `NAME has N ITEMS.`; the sentences between are operations (`buys B
/// more`, `finds B more`, `FRIEND gives him/her B`: additions; `gives B ... to FRIEND`,
/// `loses B`, `sells B`: subtractions) or distractors (`OTHER has N ITEMS.`, ignored).
pub fn parse_question(text: &str) -> Option<Steps> {
    let end = text.rfind(" have now?")?;
    let ask = text[..end].rfind("How many ")?;
    let asked: Vec<&str> = text[ask + "How many ".len()..end].split_whitespace().collect();
    let [_, "does", name] = asked[..] else { return None };
    // The subject's sentence: `NAME has ` at the start of a word, the last one before the ask.
    let subject = format!("{name} has ");
    let begin = text[..ask]
        .match_indices(&subject)
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || text[..i].ends_with(char::is_whitespace))
        .last()?;
    let mut sentences = text[begin..ask].split('.').map(str::trim).filter(|s| !s.is_empty());
    let number = |w: &str| w.parse::<u32>().ok();
    let first: Vec<&str> = sentences.next()?.split_whitespace().collect();
    let start = match first[..] {
        [_, "has", n, _] => number(n)?,
        _ => return None,
    };
    let mut ops = Vec::new();
    for sentence in sentences {
        let w: Vec<&str> = sentence.split_whitespace().collect();
        let op = match w[..] {
            [_, "buys", b, "more", _] | [_, "finds", b, "more", _] => (number(b)?, true),
            [_, "gives", "him" | "her", b, _] => (number(b)?, true),
            [_, "gives", b, _, "to", _] | [_, "loses", b, _] | [_, "sells", b, _] => (number(b)?, false),
            [_, "has", n, _] => {
                number(n)?;
                continue;
            }
            _ => return None,
        };
        ops.push(op);
    }
    (!ops.is_empty()).then_some(Steps { start, ops })
}

/// The knobs of the generator.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ArithConfig {
    /// Operations per problem (the prototype used 2).
    pub steps: usize,
    /// Largest starting quantity and operand.
    pub max_number: u32,
    /// Probability that a training problem carries a distractor sentence.
    pub distractor_prob: f64,
    pub seed: u64,
}

impl Default for ArithConfig {
    fn default() -> Self {
        ArithConfig { steps: 2, max_number: 9, distractor_prob: 0.25, seed: 0 }
    }
}

#[derive(Debug, Clone)]
struct Problem {
    name: usize,
    friend: usize,
    item: usize,
    start: u32,
    /// (operand, is_addition, phrasing)
    ops: Vec<(u32, bool, usize)>,
    /// (person, item, quantity) sentences that do not matter.
    distractors: Vec<(usize, usize, u32)>,
}

impl Problem {
    fn random(rng: &mut ChaCha8Rng, cfg: &ArithConfig, distractors: usize) -> Problem {
        let name = rng.random_range(0..NAMES.len());
        let mut friend = rng.random_range(0..NAMES.len() - 1);
        if friend >= name {
            friend += 1;
        }
        let item = rng.random_range(0..ITEMS.len());
        let start = rng.random_range(1..=cfg.max_number);
        let mut p = Problem { name, friend, item, start, ops: Vec::new(), distractors: Vec::new() };
        p.renumber(rng, cfg);
        for _ in 0..distractors {
            p.add_distractor(rng, cfg);
        }
        p
    }

    /// New start and operands with the same shape (count of steps).
    fn renumber(&mut self, rng: &mut ChaCha8Rng, cfg: &ArithConfig) {
        self.start = rng.random_range(1..=cfg.max_number);
        let mut value = self.start;
        self.ops.clear();
        for _ in 0..cfg.steps {
            let add = value == 0 || rng.random_bool(0.5);
            let b = if add { rng.random_range(1..=cfg.max_number) } else { rng.random_range(1..=value.min(cfg.max_number)) };
            value = if add { value + b } else { value - b };
            self.ops.push((b, add, rng.random_range(0..3)));
        }
    }

    fn add_distractor(&mut self, rng: &mut ChaCha8Rng, cfg: &ArithConfig) {
        let who = loop {
            let w = rng.random_range(0..NAMES.len());
            if w != self.name {
                break w;
            }
        };
        self.distractors.push((who, rng.random_range(0..ITEMS.len()), rng.random_range(1..=cfg.max_number)));
    }

    #[cfg(test)]
    fn steps(&self) -> Steps {
        Steps { start: self.start, ops: self.ops.iter().map(|&(b, add, _)| (b, add)).collect() }
    }

    fn answer(&self) -> u32 {
        self.ops.iter().fold(self.start, |v, &(b, add, _)| if add { v + b } else { v - b })
    }

    fn question(&self) -> String {
        let (name, he) = NAMES[self.name];
        let friend = NAMES[self.friend].0;
        let item = ITEMS[self.item];
        let mut s = format!("{name} has {} {}.", self.start, plural(item, self.start));
        let mut sentences: Vec<String> = self
            .ops
            .iter()
            .map(|&(b, add, k)| {
                let items = plural(item, b);
                match (add, k) {
                    (true, 0) => format!("{he} buys {b} more {items}."),
                    (true, 1) => format!("{he} finds {b} more {items}."),
                    (true, _) => format!("{friend} gives {} {b} {items}.", object(he)),
                    (false, 0) => format!("{he} gives {b} {items} to {friend}."),
                    (false, 1) => format!("{he} loses {b} {items}."),
                    (false, _) => format!("{he} sells {b} {items}."),
                }
            })
            .collect();
        // Distractors go between the steps, at positions fixed by their content.
        for (i, &(who, it, n)) in self.distractors.iter().enumerate() {
            let at = (who + it + i) % (sentences.len() + 1);
            sentences.insert(at, format!("{} has {n} {}.", NAMES[who].0, plural(ITEMS[it], n)));
        }
        for x in sentences {
            s.push(' ');
            s += &x;
        }
        s += &format!(" How many {} does {name} have now?", plural(item, 2));
        s
    }

    fn solution(&self) -> String {
        let (name, _) = NAMES[self.name];
        let item = ITEMS[self.item];
        let mut s = format!("{name} starts with {} {}.", self.start, plural(item, self.start));
        let mut v = self.start;
        for &(b, add, _) in &self.ops {
            let next = if add { v + b } else { v - b };
            s += &format!(" {v} {} {b} = {next}.", if add { "+" } else { "-" });
            v = next;
        }
        s += &format!(" The answer is \\boxed{{{v}}}.");
        s
    }

    fn to_prompt(&self, data_source: &str, split: &str, index: usize) -> Prompt {
        let messages = vec![Message { role: "user".into(), content: format!("{}\n{INSTRUCTION}", self.question()) }];
        Prompt {
            prompt_id: format!("{data_source}/{split}/{index}"),
            data_source: data_source.into(),
            messages,
            ability: Some("math".into()),
            ground_truth: self.answer().to_string(),
            style: Some("rule".into()),
            index: Some(index as i64),
            split: Some(split.into()),
            solution: Some(self.solution()),
        }
    }
}

fn plural(item: &str, n: u32) -> String {
    if n == 1 {
        item.to_string()
    } else {
        format!("{item}s")
    }
}

fn object(he: &str) -> &'static str {
    if he == "He" {
        "him"
    } else {
        "her"
    }
}

/// The four splits of the task.
pub struct ArithTask {
    pub train: Vec<Prompt>,
    pub test: Vec<Prompt>,
    /// Renamed entities and changed numbers (GSM-P1-like).
    pub test_p1: Vec<Prompt>,
    /// Distractor sentences added (GSM-P2-like).
    pub test_p2: Vec<Prompt>,
}

/// Generate `n_train` training problems and `n_test` held-out problems (each with its two
/// perturbed variants), deterministically from `cfg.seed`.
pub fn generate(cfg: &ArithConfig, n_train: usize, n_test: usize) -> ArithTask {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut seen = std::collections::HashSet::new();
    let mut test_problems = Vec::with_capacity(n_test);
    // Held-out problems first, so the train split can exclude their questions.
    let mut guard = 0;
    while test_problems.len() < n_test && guard < n_test * 100 {
        guard += 1;
        let p = Problem::random(&mut rng, cfg, 0);
        if seen.insert(p.question()) {
            test_problems.push(p);
        }
    }
    let mut train = Vec::with_capacity(n_train);
    let mut guard = 0;
    while train.len() < n_train && guard < n_train * 100 {
        guard += 1;
        let d = usize::from(rng.random_bool(cfg.distractor_prob));
        let p = Problem::random(&mut rng, cfg, d);
        let q = p.question();
        // Exclude the held-out questions (and their distractor-free forms).
        let mut bare = p.clone();
        bare.distractors.clear();
        if !seen.contains(&q) && !seen.contains(&bare.question()) {
            train.push(p.to_prompt("clipo/arith", "train", train.len()));
        }
    }
    let test: Vec<Prompt> = test_problems.iter().enumerate().map(|(i, p)| p.to_prompt("clipo/arith", "test", i)).collect();
    let test_p1 = test_problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut q = p.clone();
            q.name = (p.name + 1 + rng.random_range(0..NAMES.len() - 1)) % NAMES.len();
            q.friend = if p.friend == q.name { (q.name + 1) % NAMES.len() } else { p.friend };
            q.item = (p.item + 1 + rng.random_range(0..ITEMS.len() - 1)) % ITEMS.len();
            q.renumber(&mut rng, cfg);
            q.to_prompt("clipo/arith_p1", "test", i)
        })
        .collect();
    let test_p2 = test_problems
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut q = p.clone();
            for _ in 0..rng.random_range(1..=2) {
                q.add_distractor(&mut rng, cfg);
            }
            q.to_prompt("clipo/arith_p2", "test", i)
        })
        .collect();
    ArithTask { train, test, test_p1, test_p2 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::compute_score;

    #[test]
    fn solutions_verify_and_splits_are_disjoint() {
        let task = generate(&ArithConfig { seed: 3, ..Default::default() }, 2000, 300);
        assert_eq!((task.train.len(), task.test.len(), task.test_p1.len(), task.test_p2.len()), (2000, 300, 300, 300));
        for p in task.train.iter().chain(&task.test).chain(&task.test_p1).chain(&task.test_p2) {
            let sol = p.solution.as_deref().unwrap();
            let v = compute_score(&p.data_source, sol, &p.ground_truth);
            assert!(v.correct, "{sol} vs {}", p.ground_truth);
            assert!(p.messages[0].content.ends_with(INSTRUCTION));
        }
        let train_q: std::collections::HashSet<&str> = task.train.iter().map(|p| p.messages[0].content.as_str()).collect();
        assert!(task.test.iter().all(|p| !train_q.contains(p.messages[0].content.as_str())));
        // Perturbed variants differ from their originals.
        for (a, (b, c)) in task.test.iter().zip(task.test_p1.iter().zip(&task.test_p2)) {
            assert_ne!(a.messages[0].content, b.messages[0].content);
            assert!(c.messages[0].content.len() > a.messages[0].content.len());
            assert_eq!(a.ground_truth, c.ground_truth, "distractors do not change the answer");
        }
        // Deterministic in the seed.
        let again = generate(&ArithConfig { seed: 3, ..Default::default() }, 2000, 300);
        assert_eq!(again.train, task.train);
        assert_eq!(again.test_p1, task.test_p1);
    }

    #[test]
    fn a_problem_reads_like_the_doc() {
        let p = Problem { name: 3, friend: 8, item: 7, start: 7, ops: vec![(2, true, 1), (4, false, 0)], distractors: vec![] };
        assert_eq!(p.question(), "Mia has 7 shells. She finds 2 more shells. She gives 4 shells to Leo. How many shells does Mia have now?");
        assert_eq!(p.solution(), "Mia starts with 7 shells. 7 + 2 = 9. 9 - 4 = 5. The answer is \\boxed{5}.");
        assert_eq!(p.answer(), 5);
        let steps = parse_question(&p.question()).unwrap();
        assert_eq!(steps, Steps { start: 7, ops: vec![(2, true), (4, false)] });
        assert_eq!(steps.values(), vec![7, 9, 5]);
        let eqs: Vec<String> = steps.equations().iter().map(|e| e.to_string()).collect();
        assert_eq!(eqs, ["7 + 2 = 9", "9 - 4 = 5"]);
    }

    #[test]
    fn the_steps_are_read_back_from_every_question_of_every_split() {
        // Every phrasing, with distractors anywhere, inside a chat template.
        for seed in [0, 1, 7] {
            let cfg = ArithConfig { seed, ..Default::default() };
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..3000 {
                let distractors = rng.random_range(0..=2);
                let p = Problem::random(&mut rng, &cfg, distractors);
                let templated = format!("<|im_start|>user\n{}\n{INSTRUCTION}<|im_end|>\n<|im_start|>assistant\n", p.question());
                assert_eq!(parse_question(&templated).as_ref(), Some(&p.steps()), "{}", p.question());
                assert_eq!(*p.steps().values().last().unwrap(), i64::from(p.answer()));
            }
            // The generated splits: the steps' answer is the ground truth and their equations
            // are the reference solution's.
            let task = generate(&cfg, 500, 100);
            for pr in task.train.iter().chain(&task.test).chain(&task.test_p1).chain(&task.test_p2) {
                let steps = parse_question(&pr.messages[0].content).unwrap_or_else(|| panic!("{}", pr.messages[0].content));
                assert_eq!(steps.values().last().unwrap().to_string(), pr.ground_truth);
                let eqs: Vec<String> = steps.equations().iter().map(|e| format!(" {e}.")).collect();
                assert!(pr.solution.as_deref().unwrap().contains(&eqs.concat()), "{:?} vs {eqs:?}", pr.solution);
            }
        }
        // Text that is not such a question, or has a sentence the generator never writes.
        assert_eq!(parse_question("What is 2 + 2?"), None);
        assert_eq!(parse_question("Mia has 7 shells. She eats 2 shells. How many shells does Mia have now?"), None);
        assert_eq!(parse_question("Mia has 7 shells. How many shells does Mia have now?"), None);
    }
}
