//! PRM800K `grader.py` (REFERENCE.md §5, check (b)): `_normalize`, `split_tuple`,
//! the fraction / integer strictness rules, `should_allow_eval` and
//! `grade_answer`. The sympy step is [`super::expr::sympy_diff_is_zero`].

use std::sync::OnceLock;

use regex::Regex;

use super::{expr, latex, mathd, pystr};

/// Words `_normalize` deletes, in its order (order matters: removal is sequential).
const UNITS: [&str; 17] = [
    "degree", "cm", "centimeter", "meter", "mile", "second", "minute", "hour", "day", "week",
    "month", "year", "foot", "feet", "inch", "yard", "liter",
];

struct Regexes {
    text: Regex,
    units: Vec<Regex>,
    circ: Regex,
    comma_bang: Regex,
    dash_space: Regex,
    mixed: Regex,
    commas: Regex,
    is_frac: Regex,
    bad_pow_pow: Regex,
    bad_long_pow: Regex,
}

fn re() -> &'static Regexes {
    static R: OnceLock<Regexes> = OnceLock::new();
    R.get_or_init(|| {
        let r = |p: &str| Regex::new(p).expect("static regex");
        Regexes {
            // Python `$` also matches before one final "\n".
            text: r(r"\A\\text\{(.+?)\}\n?\z"),
            units: UNITS.iter().map(|u| r(&format!(r"{u}(es)?(s)? *(\^[0-9]+)?"))).collect(),
            circ: r(r"\^ *\\circ"),
            comma_bang: r(r",\\! *"),
            dash_space: r(r"- *"),
            mixed: r(r"([0-9]) +([0-9])"),
            commas: r(r"(\d)(,)(\d\d\d)(\z|\D)"),
            is_frac: r(r"\A-?[0-9]+.?/0*[1-9][0-9]*.?\n?\z"),
            bad_pow_pow: r(r"\^[0-9]+\^"),
            bad_long_pow: r(r"\^[0-9][0-9]+"),
        }
    })
}

/// `_strip_properly_formatted_commas`: `1,000,000` -> `1000000`, tuples kept.
pub fn strip_properly_formatted_commas(s: &str) -> String {
    let mut cur = s.to_string();
    if !cur.contains(',') {
        return cur;
    }
    loop {
        let next = re().commas.replace_all(&cur, "${1}${3}${4}").into_owned();
        if next == cur {
            return next;
        }
        cur = next;
    }
}

/// `_str_is_int`.
pub fn str_is_int(s: &str) -> bool {
    pystr::py_float(&strip_properly_formatted_commas(s)).is_some_and(pystr::is_int)
}

/// `str(_str_to_int(s))`: commas dropped, `int(float(s))` truncates toward zero.
fn str_to_int_string(s: &str) -> Option<String> {
    let v = pystr::py_float(&s.replace(',', ""))?;
    if !v.is_finite() {
        return None;
    }
    Some(pystr::int_float_to_string(v.trunc()))
}

/// `_is_frac`.
pub fn is_frac(s: &str) -> bool {
    re().is_frac.is_match(s)
}

/// `_parse_latex`: the LaTeX-to-plain step of `_normalize`; `Err` where Python raises.
pub fn parse_latex(s: &str) -> Result<String, latex::Fail> {
    let s = s.replace("\\tfrac", "\\frac").replace("\\dfrac", "\\frac").replace("\\frac", " \\frac");
    let t = latex::latex_to_text(&s)?;
    let t = t
        .replace('√', "sqrt")
        .replace('π', "pi")
        .replace('∞', "inf")
        .replace('∪', "U")
        .replace(['·', '×'], "*");
    Ok(pystr::strip(&t).to_string())
}

/// `_normalize(expr)`.
pub fn normalize(expr: &str) -> String {
    let r = re();
    let captured = if expr.starts_with("\\text{") { r.text.captures(expr) } else { None };
    let mut e: String = match captured {
        Some(c) => c.get(1).map_or("", |m| m.as_str()).to_string(),
        None => expr.to_string(),
    };
    for (from, to) in [("\\%", "%"), ("\\$", "$"), ("$", ""), ("%", ""), (" or ", " , "), (" and ", " , ")] {
        pystr::replace_in(&mut e, from, to);
    }
    if e.contains("illion") {
        for (from, to) in [("million", "*10^6"), ("billion", "*10^9"), ("trillion", "*10^12")] {
            pystr::replace_in(&mut e, from, to);
        }
    }
    for (unit, rx) in UNITS.iter().zip(&r.units) {
        if e.contains(unit) {
            e = rx.replace_all(&e, "").into_owned();
        }
    }
    if e.contains('^') {
        e = r.circ.replace_all(&e, "").into_owned();
    }
    if e.len() >= 2 && e.starts_with('{') && e.ends_with('}') {
        e = e[1..e.len() - 1].to_string();
    }
    if e.contains(",\\!") {
        e = r.comma_bang.replace_all(&e, "").into_owned();
    }
    if let Some(i) = pystr::normalize_int_float(&e) {
        e = i;
    }
    if e.contains('\\') {
        if let Ok(t) = parse_latex(&e) {
            e = t;
        }
    }
    if e.contains('-') {
        e = r.dash_space.replace_all(&e, "-").into_owned();
    }
    if e.contains(' ') {
        e = r.mixed.replace_all(&e, "${1}+${2}").into_owned();
    }
    e = e.to_lowercase();
    if str_is_int(&e) {
        if let Some(i) = str_to_int_string(&e) {
            e = i;
        }
    }
    e
}

/// `count_unknown_letters_in_expr`.
fn count_unknown_letters(expr: &str) -> usize {
    let e = expr.replace("sqrt", "").replace("frac", "");
    let mut seen: Vec<char> = Vec::new();
    for c in e.chars().filter(|c| c.is_alphabetic()) {
        if !seen.contains(&c) {
            seen.push(c);
            if seen.len() > 2 {
                break;
            }
        }
    }
    seen.len()
}

/// `should_allow_eval`: at most two letters, no `^{`, `^(`, `^2^`, `^12`.
pub fn should_allow_eval(expr: &str) -> bool {
    let r = re();
    count_unknown_letters(expr) <= 2
        && !expr.contains("^{")
        && !expr.contains("^(")
        && !r.bad_pow_pow.is_match(expr)
        && !r.bad_long_pow.is_match(expr)
}

/// `are_equal_under_sympy(gt, given)`.
pub fn are_equal_under_sympy(gt: &str, given: &str) -> bool {
    let e = format!("({gt})-({given})");
    should_allow_eval(&e) && expr::sympy_diff_is_zero(&e)
}

/// `split_tuple`: elements of `(a, b)` / `[a, b)` with no inner brackets, else `[expr]`.
pub fn split_tuple(expr: &str) -> Vec<String> {
    let e = strip_properly_formatted_commas(expr);
    if e.is_empty() {
        return Vec::new();
    }
    const TUPLE: &[char] = &['(', ')', '[', ']'];
    let n = e.chars().count();
    let first = e.chars().next().unwrap_or(' ');
    let last = e.chars().next_back().unwrap_or(' ');
    if n > 2 && TUPLE.contains(&first) && TUPLE.contains(&last) {
        let inner = &e[first.len_utf8()..e.len() - last.len_utf8()];
        if !inner.contains(TUPLE) {
            return inner.split(',').map(|x| pystr::strip(x).to_string()).collect();
        }
    }
    vec![e]
}

/// How `grade_answer` decided (for [`super::Reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grade {
    /// Hendrycks normalisation made both equal.
    MathdEqual,
    /// `_normalize` made both equal as strings.
    NormalizedEqual,
    /// Every element passed the fraction / integer / sympy rules.
    Symbolic,
    /// Not equal.
    Wrong,
}

/// `grade_answer(given, ground_truth)`.
pub fn grade_answer(given: &str, ground_truth: &str) -> Grade {
    if mathd::normalize_answer(ground_truth) == mathd::normalize_answer(given) {
        return Grade::MathdEqual;
    }
    let gt = normalize(ground_truth);
    let gv = normalize(given);
    if gt == gv {
        return Grade::NormalizedEqual;
    }
    if gv.is_empty() {
        return Grade::Wrong;
    }
    let gt_elems = split_tuple(&gt);
    let gv_elems = split_tuple(&gv);
    if gt_elems.len() > 1 && (gt.chars().next() != gv.chars().next() || gt.chars().next_back() != gv.chars().next_back()) {
        return Grade::Wrong;
    }
    if gt_elems.len() != gv_elems.len() {
        return Grade::Wrong;
    }
    // zip over zero elements leaves `is_correct` unbound in Python -> exception.
    if gt_elems.is_empty() {
        return Grade::Wrong;
    }
    for (a, b) in gt_elems.iter().zip(&gv_elems) {
        let ok = if is_frac(a) && is_frac(b) {
            a == b
        } else if str_is_int(a) != str_is_int(b) {
            false
        } else {
            are_equal_under_sympy(a, b)
        };
        if !ok {
            return Grade::Wrong;
        }
    }
    Grade::Symbolic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_like_prm800k() {
        assert_eq!(normalize("10,\\!080"), "10080");
        assert_eq!(normalize("\\text{Evelyn}"), "evelyn");
        assert_eq!(normalize("90^\\circ"), "90");
        assert_eq!(normalize("12.0"), "12");
        assert_eq!(normalize("1,000"), "1000");
        assert_eq!(normalize("5 \\text{ cm}"), "5");
        assert_eq!(normalize("\\frac{\\sqrt{3}}{2}"), "sqrt(3)/2");
        assert_eq!(normalize("0 or 4"), "0 , 4");
        assert_eq!(normalize("7 3/4"), "7+3/4");
        assert_eq!(normalize("2.99999999"), "3");
        // the final `_str_to_int` truncates: int(float("1999.99999999"))
        assert_eq!(normalize("1,999.99999999"), "1999");
    }

    #[test]
    fn split_tuples() {
        assert_eq!(split_tuple("(1, 2)"), vec!["1", "2"]);
        assert_eq!(split_tuple("(1,000, 2)"), vec!["1000", "2"]);
        assert_eq!(split_tuple("((1,2))"), vec!["((1,2))"]);
        assert_eq!(split_tuple("1, 2"), vec!["1, 2"]);
    }

    #[test]
    fn strictness_rules() {
        // integer vs non-integer never compared symbolically
        assert_eq!(grade_answer("12.5", "12"), Grade::Wrong);
        // unreduced fraction is wrong, reduced right
        assert_eq!(grade_answer("\\frac{2}{4}", "\\frac{1}{2}"), Grade::Wrong);
        assert_eq!(grade_answer("\\frac{1}{2}", "\\frac12"), Grade::MathdEqual);
        // decimal for a fraction goes through sympy
        assert_eq!(grade_answer("0.75", "\\frac{3}{4}"), Grade::Symbolic);
        assert_eq!(grade_answer("12", "12.0"), Grade::NormalizedEqual);
        assert_eq!(grade_answer("(2, 1)", "(1, 2)"), Grade::Wrong);
        assert_eq!(grade_answer("[1, 2)", "(1, 2)"), Grade::Wrong);
    }

    #[test]
    fn allow_eval_gate() {
        assert!(should_allow_eval("(x+1)-(1+x)"));
        assert!(!should_allow_eval("(x+y+z)-(0)"));
        assert!(!should_allow_eval("(2^{3})-(8)"));
        assert!(!should_allow_eval("(2^10)-(1024)"));
        assert!(should_allow_eval("(sqrt(3)/2)-(frac)"));
    }
}
