//! Which scorer scores which response: `clipo-verify --scorer-for PATTERN=SCORER`, matched
//! against `data_source` as verl's `default_compute_score` dispatches on it.
//!
//! Rules are tried in the order given and the first whose glob matches the whole data source
//! wins; a data source no rule matches goes to the default (`--scorer`, else the paper's
//! verifier). Globs: `*` any run of characters (`/` included, as Python's `fnmatch`), `?` one
//! character, everything else literal.
//!
//! A scorer is named `builtin` or `conrl` (the paper's verifier, [`super::compute_score`]),
//! `conrl-format` (the same with a format reward, [`super::with_format_reward`]), `gsm8k` or
//! `gsm8k-flexible` (verl's GSM8K scorer, [`super::gsm8k`]), or is a program's command line
//! ([`super::scorer`]).

use crate::error::{Error, Result};

/// The verifier identities stamped into the provenance: bump one when its scoring changes.
pub const CONRL: &str = "conrl_reward/1";
pub const CONRL_FORMAT: &str = "conrl_reward_format/1";
pub const GSM8K_STRICT: &str = "verl_gsm8k_strict/1";
pub const GSM8K_FLEXIBLE: &str = "verl_gsm8k_flexible/1";

/// One scorer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scorer {
    /// The paper's verifier (REFERENCE.md §5).
    Conrl,
    /// The paper's verifier plus a format reward for a wrong answer in a well-formed `\boxed{}`.
    ConrlFormat,
    /// verl's GSM8K scorer, `#### 72` answers.
    Gsm8k(super::gsm8k::Method),
    /// A program speaking the line protocol of schemas/scorer.md; the command runs under `sh -c`.
    Program(String),
}

impl Scorer {
    /// A built-in's name or a program's command line.
    pub fn parse(s: &str) -> Result<Scorer> {
        let s = s.trim();
        Ok(match s {
            "builtin" | "conrl" => Scorer::Conrl,
            "conrl-format" => Scorer::ConrlFormat,
            "gsm8k" => Scorer::Gsm8k(super::gsm8k::Method::Strict),
            "gsm8k-flexible" => Scorer::Gsm8k(super::gsm8k::Method::Flexible),
            "" => return Err(Error::Config("an empty scorer: expected builtin, conrl, conrl-format, gsm8k, gsm8k-flexible or a command".into())),
            cmd => Scorer::Program(cmd.to_string()),
        })
    }

    /// How the provenance names it (a program by its command line; the stage adds its files'
    /// hashes).
    pub fn identity(&self) -> String {
        match self {
            Scorer::Conrl => CONRL.into(),
            Scorer::ConrlFormat => CONRL_FORMAT.into(),
            Scorer::Gsm8k(super::gsm8k::Method::Strict) => GSM8K_STRICT.into(),
            Scorer::Gsm8k(super::gsm8k::Method::Flexible) => GSM8K_FLEXIBLE.into(),
            Scorer::Program(cmd) => format!("program: {cmd}"),
        }
    }
}

/// `--scorer-for PATTERN=SCORER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub pattern: String,
    pub scorer: Scorer,
}

impl Rule {
    /// Parses `PATTERN=SCORER` (split at the first `=`, so a command may hold `=`).
    pub fn parse(s: &str) -> Result<Rule> {
        let (pattern, scorer) = s.split_once('=').ok_or_else(|| {
            Error::Config(format!("--scorer-for {s}: expected PATTERN=SCORER, e.g. 'openai/gsm8k=gsm8k' or 'code/*=python3 run_tests.py'"))
        })?;
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(Error::Config(format!("--scorer-for {s}: the pattern before `=` is empty (use `*` for every data source)")));
        }
        let scorer = Scorer::parse(scorer).map_err(|e| Error::Config(format!("--scorer-for {s}: {e}")))?;
        Ok(Rule { pattern: pattern.to_string(), scorer })
    }
}

/// The rules and the default, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    pub rules: Vec<Rule>,
    pub default: Scorer,
}

impl Default for Dispatch {
    fn default() -> Self {
        Dispatch { rules: vec![], default: Scorer::Conrl }
    }
}

impl Dispatch {
    /// The scorer of `data_source`.
    pub fn pick(&self, data_source: &str) -> &Scorer {
        self.rules.iter().find(|r| glob_match(&r.pattern, data_source)).map_or(&self.default, |r| &r.scorer)
    }

    /// Whether this is the paper's verifier alone (the provenance then stays what it was before
    /// scorers existed, so older rewards tables stay up to date).
    pub fn is_default(&self) -> bool {
        self.rules.iter().all(|r| r.scorer == Scorer::Conrl) && self.default == Scorer::Conrl
    }

    /// Every distinct scorer, rules first then the default, each once.
    pub fn scorers(&self) -> Vec<&Scorer> {
        let mut out: Vec<&Scorer> = Vec::new();
        for s in self.rules.iter().map(|r| &r.scorer).chain([&self.default]) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }
}

/// `pattern` matches the whole of `text`: `*` any run of characters, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // The classic linear backtracking match: remember the last `*` and how much it has eaten.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_data_sources() {
        assert!(glob_match("openai/gsm8k", "openai/gsm8k"));
        assert!(!glob_match("gsm8k", "openai/gsm8k"));
        assert!(glob_match("*gsm8k", "openai/gsm8k"));
        assert!(glob_match("conrl/*", "conrl/math/level5"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a?c", "abc") && !glob_match("a?c", "ac"));
        assert!(glob_match("*a*b*", "xxaxxbxx") && !glob_match("*a*b", "xxbxxa"));
        assert!(glob_match("é*", "école") && !glob_match("", "x"));
    }

    #[test]
    fn rules_first_match_wins_then_the_default() {
        let d = Dispatch {
            rules: vec![Rule::parse("openai/gsm8k=gsm8k").unwrap(), Rule::parse("code/*=python3 t.py --k=v").unwrap(), Rule::parse("*=conrl").unwrap()],
            default: Scorer::Program("never".into()),
        };
        assert_eq!(d.pick("openai/gsm8k"), &Scorer::Gsm8k(crate::verify::gsm8k::Method::Strict));
        assert_eq!(d.pick("code/apps"), &Scorer::Program("python3 t.py --k=v".into()));
        assert_eq!(d.pick("conrl/math"), &Scorer::Conrl);
        assert_eq!(d.scorers().len(), 4);
        assert!(Dispatch::default().is_default());
        assert!(!d.is_default());
    }

    #[test]
    fn malformed_rules_are_named() {
        assert!(Rule::parse("gsm8k").unwrap_err().to_string().contains("expected PATTERN=SCORER"));
        assert!(Rule::parse("=gsm8k").unwrap_err().to_string().contains("pattern before `=` is empty"));
        assert!(Rule::parse("x= ").unwrap_err().to_string().contains("an empty scorer"));
        assert_eq!(Rule::parse("x=builtin").unwrap().scorer, Scorer::Conrl);
        assert_eq!(Rule::parse("x=conrl-format").unwrap().scorer, Scorer::ConrlFormat);
        assert_eq!(Rule::parse("x=gsm8k-flexible").unwrap().scorer, Scorer::Gsm8k(crate::verify::gsm8k::Method::Flexible));
    }
}
