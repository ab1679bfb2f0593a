//! Python built-ins the reference leans on (REFERENCE.md §5): `str.strip()`,
//! `float(str)`, `str(int(round(x)))`, `round` (ties to even).
//!
//! Known gap: Python's `float()` also accepts non-ASCII decimal digits
//! (e.g. Arabic-Indic); these are rejected here.

/// `s = s.replace(from, to)`, skipping the work when `from` cannot occur (most
/// answers have no backslash; `str::replace` always allocates).
pub fn replace_in(s: &mut String, from: &str, to: &str) {
    let Some(first) = from.chars().next() else { return };
    if s.contains(first) && s.contains(from) {
        *s = s.replace(from, to);
    }
}

/// Python's `str.isspace()` for one character.
pub fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` with no argument.
pub fn strip(s: &str) -> &str {
    s.trim_matches(is_space)
}

/// Digits with single underscores between digits (PEP 515), at least one digit.
fn valid_digit_run(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_digit()
        && b[b.len() - 1].is_ascii_digit()
        && b.iter().all(|c| c.is_ascii_digit() || *c == b'_')
        && !s.contains("__")
}

/// Python's `float(s)` for `str` input; `None` where Python raises ValueError.
pub fn py_float(s: &str) -> Option<f64> {
    let t = strip(s);
    let (neg, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = body.to_ascii_lowercase();
    let special = match lower.as_str() {
        "inf" | "infinity" => Some(f64::INFINITY),
        "nan" => Some(f64::NAN),
        _ => None,
    };
    if let Some(v) = special {
        return Some(if neg { -v } else { v });
    }
    let (mantissa, exponent) = match lower.find('e') {
        Some(i) => (&lower[..i], Some(&lower[i + 1..])),
        None => (lower.as_str(), None),
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let int_ok = int_part.is_empty() || valid_digit_run(int_part);
    let frac_ok = match frac_part {
        None => true,
        Some(f) => f.is_empty() || valid_digit_run(f),
    };
    let has_digit = !int_part.is_empty() || frac_part.is_some_and(|f| !f.is_empty());
    if !(int_ok && frac_ok && has_digit) {
        return None;
    }
    if let Some(e) = exponent {
        let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        if !valid_digit_run(digits) {
            return None;
        }
    }
    let clean: String = lower.chars().filter(|&c| c != '_').collect();
    let v: f64 = clean.parse().ok()?;
    Some(if neg { -v } else { v })
}

/// Python's `round(x)` for a float: nearest integer, ties to even.
pub fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// `abs(x - int(round(x))) <= 1e-7`, False where Python raises (inf, nan).
pub fn is_int(x: f64) -> bool {
    x.is_finite() && (x - py_round(x)).abs() <= 1e-7
}

/// `str(int(v))` for a finite, integral float: its exact decimal digits.
pub fn int_float_to_string(v: f64) -> String {
    if v.abs() < 1e30 {
        return format!("{}", v as i128);
    }
    // v = m * 2^e exactly; multiply a little-endian base-1e9 number by 2, e times.
    let bits = v.abs().to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i64 - 1075;
    let mut m = (bits & ((1u64 << 52) - 1)) | (1u64 << 52);
    let mut limbs: Vec<u64> = Vec::new();
    while m > 0 {
        limbs.push(m % 1_000_000_000);
        m /= 1_000_000_000;
    }
    for _ in 0..exp.max(0) {
        let mut carry = 0u64;
        for l in limbs.iter_mut() {
            let x = *l * 2 + carry;
            *l = x % 1_000_000_000;
            carry = x / 1_000_000_000;
        }
        if carry > 0 {
            limbs.push(carry);
        }
    }
    let mut out = String::new();
    if v < 0.0 {
        out.push('-');
    }
    let mut it = limbs.iter().rev();
    if let Some(first) = it.next() {
        out.push_str(&first.to_string());
    }
    for l in it {
        out.push_str(&format!("{l:09}"));
    }
    out
}

/// `str(int(round(float(s))))` when `_is_float(s) and _is_int(float(s))`.
pub fn normalize_int_float(s: &str) -> Option<String> {
    let v = py_float(s)?;
    if is_int(v) {
        Some(int_float_to_string(py_round(v)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_python() {
        assert_eq!(py_float(" 1_000.5 "), Some(1000.5));
        assert_eq!(py_float(".5"), Some(0.5));
        assert_eq!(py_float("5."), Some(5.0));
        assert_eq!(py_float("1e3"), Some(1000.0));
        assert_eq!(py_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(py_float("1__0"), None);
        assert_eq!(py_float("_1"), None);
        assert_eq!(py_float("."), None);
        assert_eq!(py_float("1e"), None);
        assert_eq!(py_float("1,000"), None);
        assert_eq!(py_float("0x10"), None);
    }

    #[test]
    fn int_strings() {
        assert_eq!(normalize_int_float("12.0").as_deref(), Some("12"));
        assert_eq!(normalize_int_float("2.00000001").as_deref(), Some("2"));
        assert_eq!(normalize_int_float("-0.0").as_deref(), Some("0"));
        assert_eq!(normalize_int_float("1e40").as_deref(), Some("10000000000000000303786028427003666890752"));
        assert_eq!(normalize_int_float("2.5"), None);
        assert_eq!(normalize_int_float("inf"), None);
    }
}
