//! Numeric flags, checked once in each binary's `TryFrom<Args>`: a value outside its range is a
//! named error that says what is allowed (exit 2), never a panic later or a NaN in a checkpoint.
//! Integer flags below zero or not numbers are refused by clap itself (also exit 2).

use crate::error::{Error, Result};

fn refuse(flag: &str, v: impl std::fmt::Display, allowed: &str) -> Error {
    Error::Config(format!("{flag} {v}: expected {allowed}"))
}

/// Any finite number.
pub fn finite(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a finite number"))
    }
}

/// A finite number > 0.
pub fn positive(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a finite number > 0"))
    }
}

/// A finite number >= 0.
pub fn non_negative(flag: &str, v: f64) -> Result<f64> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a finite number >= 0"))
    }
}

/// A number in [0, 1].
pub fn unit(flag: &str, v: f64) -> Result<f64> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a number in [0, 1]"))
    }
}

/// A number in (lo, hi).
pub fn open(flag: &str, v: f64, lo: f64, hi: f64) -> Result<f64> {
    if v > lo && v < hi {
        Ok(v)
    } else {
        Err(refuse(flag, v, &format!("a number in ({lo}, {hi})")))
    }
}

/// A count >= 1.
pub fn count<T: Copy + PartialOrd + From<u8> + std::fmt::Display>(flag: &str, v: T) -> Result<T> {
    if v >= T::from(1) {
        Ok(v)
    } else {
        Err(refuse(flag, v, "a whole number >= 1"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_messages() {
        assert_eq!(positive("--lr", 1e-6).unwrap(), 1e-6);
        for v in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(positive("--lr", v).is_err());
        }
        assert_eq!(positive("--lr", f64::NAN).unwrap_err().to_string(), "--lr NaN: expected a finite number > 0");
        assert!(non_negative("--weight-decay", 0.0).is_ok() && non_negative("--weight-decay", f64::NAN).is_err());
        assert!(unit("--top-p", 1.0).is_ok() && unit("--top-p", 1.01).is_err() && unit("--top-p", f64::NAN).is_err());
        assert!(open("--clip-low", 0.2, 0.0, 1.0).is_ok() && open("--clip-low", 1.0, 0.0, 1.0).is_err());
        assert!(count("--n", 0usize).is_err() && count("--n", 1usize).is_ok());
        assert!(finite("--constant", -3.0).is_ok() && finite("--constant", f64::NEG_INFINITY).is_err());
    }
}
