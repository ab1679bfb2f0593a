//! `exp` over slices of f32, vectorised: the fused kernels' softmaxes (attention, the target
//! token's log-prob over the vocabulary) and SiLU's sigmoid take about 160 million exponentials
//! per SmolLM2 scoring pass of 8 x 256 tokens, and libm's scalar `expf` (4 ns each here) was a
//! fifth of the pass.
//!
//! The function is Cephes' `expf` (Moshier): `exp(x) = 2^n exp(r)` with `n = floor(x log2(e) +
//! 1/2)`, `r = x - n ln 2` reduced in two steps (`ln 2 = C1 + C2`, C1 exact in 9 bits) and
//! `exp(r)` on |r| <= ln(2)/2 by the degree-7 polynomial `1 + r + r^2 P(r)`; every step is a
//! fused multiply-add, so the result has the same bits on every machine (AVX-512, AVX2/FMA, or
//! the scalar fallback, where `mul_add` is exact too). Error against the f64 `exp`: at most 2
//! units in the last place from ln(2^-126) to 88.38 (checked below), a few up to ln(f32::MAX).
//! Below ln(2^-126) the result is 0 (libm returns a subnormal), above ln(f32::MAX) +inf, NaN
//! stays NaN.
//!
//! f64 (the finite-difference tests) keeps the standard library's `exp`.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const C1: f32 = 0.693_359_4; // 0.693359375: ln 2 to 9 bits, exact times any n here
const C2: f32 = -2.121_944_4e-4; // ln 2 - C1
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    5.000_000_1e-1,
];
/// ln(2^-126) (the smallest normal result) and ln(f32::MAX).
const LO: f32 = -87.336_55;
const HI: f32 = 88.722_83;

#[inline(always)]
fn exp1(x: f32) -> f32 {
    // n is kept in -126..=127 so that 2^n is a normal float; the ends are patched below (above
    // 88.38, where n would be 128, r runs past ln(2)/2 up to 0.7 and the error grows to a few
    // ulps).
    let n = x.max(LO).mul_add(LOG2E, 0.5).floor().min(127.0);
    let r = n.mul_add(-C1, x);
    let r = n.mul_add(-C2, r);
    let mut p = P[0];
    for &c in &P[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    // 2^n: n + 127 in the exponent field. SAFETY: n is an integer in -126..=127 (finite even for
    // a NaN x, which `max` drops); `as i32` would saturate lane by lane and not vectorise.
    let n = unsafe { n.to_int_unchecked::<i32>() };
    let e = y * f32::from_bits(((n + 127) as u32) << 23);
    if x < LO {
        0.0
    } else if x > HI {
        f32::INFINITY
    } else if x.is_nan() {
        x
    } else {
        e
    }
}

fn exp_scalar(xs: &mut [f32]) {
    for x in xs {
        *x = exp1(*x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn exp_avx512(xs: &mut [f32]) {
    exp_scalar(xs) // the same code, vectorised 16 lanes wide by the compiler
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_avx2(xs: &mut [f32]) {
    exp_scalar(xs)
}

/// `x = exp(x)` for every element.
pub(crate) fn exp_in_place(xs: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { exp_avx512(xs) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { exp_avx2(xs) };
        }
    }
    exp_scalar(xs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, b: f64) -> f64 {
        let ulp = f64::from(f32::from_bits((b as f32).to_bits() + 1)) - f64::from(b as f32);
        (f64::from(a) - b).abs() / ulp
    }

    #[test]
    fn within_two_ulps_of_exp_over_the_normal_range() {
        let mut xs: Vec<f32> = (0..400_000).map(|i| LO + (HI - LO) * i as f32 / 400_000.0).collect();
        xs.extend([0.0, -0.0, 1.0, -1.0, 1e-8, -1e-8, 0.5, -0.5, 88.0, 88.5, HI, LO, 20.0, -20.0]);
        let want: Vec<f64> = xs.iter().map(|&x| f64::from(x).exp()).collect();
        let mut got = xs.clone();
        exp_in_place(&mut got);
        let mut worst = (0.0, 0.0);
        for ((&x, &g), &w) in xs.iter().zip(&got).zip(&want) {
            if w < f64::from(f32::MIN_POSITIVE) || x > 88.38 {
                continue;
            }
            let u = ulps(g, w);
            if u > worst.0 {
                worst = (u, x);
            }
        }
        assert!(worst.0 <= 2.0, "{} ulps at x = {}", worst.0, worst.1);
        // the vectorised path and the scalar code give the same bits
        let mut scalar = xs.clone();
        exp_scalar(&mut scalar);
        assert!(got.iter().zip(&scalar).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn ends_and_nan() {
        let mut xs = [-1000.0, -88.0, 89.0, 1000.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 0.0];
        exp_in_place(&mut xs);
        assert_eq!(xs[0], 0.0);
        assert_eq!(xs[1], 0.0);
        assert_eq!(xs[2], f32::INFINITY);
        assert_eq!(xs[3], f32::INFINITY);
        assert_eq!(xs[4], f32::INFINITY);
        assert_eq!(xs[5], 0.0);
        assert!(xs[6].is_nan());
        assert_eq!(xs[7], 1.0);
        // past n = 127 (88.38 .. ln(f32::MAX)) the result is still within 1e-6
        let mut top: Vec<f32> = (0..1000).map(|i| 88.38 + (HI - 88.38) * i as f32 / 1000.0).collect();
        let want: Vec<f64> = top.iter().map(|&x| f64::from(x).exp()).collect();
        exp_in_place(&mut top);
        for (g, w) in top.iter().zip(&want) {
            assert!((f64::from(*g) / w - 1.0).abs() < 1e-6, "{g} vs {w}");
        }
    }
}
