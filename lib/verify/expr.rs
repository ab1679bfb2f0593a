//! The sympy step of PRM800K's grader (REFERENCE.md §5, check (b)):
//! `simplify(parse_expr("(gt)-(pred)", implicit_multiplication_application)) == 0`,
//! answered without a CAS.
//!
//! Parsing follows sympy's token pipeline: Python's tokenizer rules (`05` is `0`
//! then `5`; `2x` is `2`, `x`), `auto_symbol` + `split_symbols` (`xy` -> `x*y`,
//! `sqrt2` -> `s*q*r*t*2`; names in sympy's namespace such as `pi`, `sqrt`, `ln`,
//! `oo` are kept), `auto_number` (`1.5` is a Float, `3` an Integer), factorial
//! `!`, implicit multiplication (`2x`, `2(3)`, `)(`, `2sqrt(3)`, `2pi`) and
//! implicit application (`sqrt 2` -> `sqrt(2)`), then Python's operator grammar.
//!
//! Evaluation is exact where sympy's automatic evaluation is exact: rationals
//! (i128), sympy Floats as f64 (so `0.1+0.2-0.3` is not zero, `0.75-3/4` is),
//! perfect powers and roots. Anything irrational (`sqrt(2)`, `pi`, symbols) is
//! evaluated numerically in complex f64 at nine environments: three with the true
//! `pi`, principal square roots and random complex symbol values, and six
//! "conjugate" ones with a random value for `pi` and a random sign for each prime
//! under a square root. The difference is zero when it vanishes (to 1e-10
//! relative) in the first three; when a Float meets an irrational it must also
//! vanish in the conjugate six (sympy keeps `0.8660254037844386 - sqrt(3)/2`
//! unevaluated, but cancels `0.5*sqrt(3) - sqrt(3)/2`).
//!
//! Knowingly different from sympy: identities `simplify` cannot prove (deeply
//! nested radicals) count as equal; Float rounding inside irrational or symbolic
//! terms is not modelled (`0.1x+0.2x-0.3x` counts as zero); Floats with more than
//! 15 digits get sympy's wider precision only where exact rational modelling
//! fits i128; integers beyond i128 fall back to floating point (factorials above
//! 33! fail); functions other than `sqrt` and `ln` (and undefined functions
//! `f(x)`) make the comparison fail; the quirk where implicit application
//! swallows a following parenthesis (`sqrt 2(3)`) is not reproduced. As in
//! sympy, a newline inside parentheses blocks implicit multiplication.

/// Number of evaluation environments; the first `PRINCIPAL` use sympy's values.
const ENVS: usize = 9;
const PRINCIPAL: usize = 3;
/// Python's C tokenizer refuses deeper parenthesis nesting.
const MAX_PAREN_DEPTH: usize = 199;
/// Longest chain of unary signs or `**` we parse (Python's parser would also stop).
const MAX_CHAIN: usize = 400;

// ------------------------------------------------------------------ numbers

#[derive(Debug, Clone, Copy, PartialEq)]
struct C {
    re: f64,
    im: f64,
}

impl C {
    const fn new(re: f64, im: f64) -> C {
        C { re, im }
    }
    fn add(self, o: C) -> C {
        C::new(self.re + o.re, self.im + o.im)
    }
    fn mul(self, o: C) -> C {
        C::new(self.re * o.re - self.im * o.im, self.re * o.im + self.im * o.re)
    }
    fn div(self, o: C) -> C {
        let d = o.re * o.re + o.im * o.im;
        C::new((self.re * o.re + self.im * o.im) / d, (self.im * o.re - self.re * o.im) / d)
    }
    fn abs(self) -> f64 {
        self.re.hypot(self.im)
    }
    fn ln(self) -> C {
        C::new(self.abs().ln(), self.im.atan2(self.re))
    }
    fn exp(self) -> C {
        let r = self.re.exp();
        C::new(r * self.im.cos(), r * self.im.sin())
    }
    /// Principal square root (branch cut on the negative real axis, like sympy).
    fn sqrt(self) -> C {
        if self.im == 0.0 {
            return if self.re >= 0.0 { C::new(self.re.sqrt(), 0.0) } else { C::new(0.0, (-self.re).sqrt()) };
        }
        let r = self.abs();
        let re = ((r + self.re) / 2.0).sqrt();
        let im = ((r - self.re) / 2.0).sqrt().copysign(self.im);
        C::new(re, im)
    }
    fn powi(self, k: i64) -> C {
        let mut base = if k < 0 { C::new(1.0, 0.0).div(self) } else { self };
        let mut e = k.unsigned_abs();
        let mut acc = C::new(1.0, 0.0);
        while e > 0 {
            if e & 1 == 1 {
                acc = acc.mul(base);
            }
            base = base.mul(base);
            e >>= 1;
        }
        acc
    }
    /// Principal `self ** e`.
    fn powc(self, e: C) -> C {
        if self.re == 0.0 && self.im == 0.0 {
            return if e.re > 0.0 { C::new(0.0, 0.0) } else { C::new(f64::NAN, f64::NAN) };
        }
        e.mul(self.ln()).exp()
    }
}

fn gcd(mut a: i128, mut b: i128) -> i128 {
    a = a.abs();
    b = b.abs();
    if let (Ok(mut x), Ok(mut y)) = (u64::try_from(a), u64::try_from(b)) {
        // hardware division: i128 division is a slow library call
        while y != 0 {
            let t = x % y;
            x = y;
            y = t;
        }
        return x as i128;
    }
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

/// An exact rational (sympy Integer / Rational); `None` from an op = overflow.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Q {
    n: i128,
    d: i128,
}

impl Q {
    fn int(n: i128) -> Q {
        Q { n, d: 1 }
    }
    fn new(n: i128, d: i128) -> Option<Q> {
        if d == 0 {
            return None;
        }
        let g = gcd(n, d);
        let (mut n, mut d) = (n / g, d / g);
        if d < 0 {
            n = n.checked_neg()?;
            d = d.checked_neg()?;
        }
        Some(Q { n, d })
    }
    fn add(self, o: Q) -> Option<Q> {
        if self.d == 1 && o.d == 1 {
            return Some(Q::int(self.n.checked_add(o.n)?));
        }
        let g = gcd(self.d, o.d);
        let l = (self.d / g).checked_mul(o.d)?;
        let a = self.n.checked_mul(l / self.d)?;
        let b = o.n.checked_mul(l / o.d)?;
        Q::new(a.checked_add(b)?, l)
    }
    fn neg(self) -> Option<Q> {
        Some(Q { n: self.n.checked_neg()?, d: self.d })
    }
    fn mul(self, o: Q) -> Option<Q> {
        let g1 = gcd(self.n, o.d).max(1);
        let g2 = gcd(o.n, self.d).max(1);
        Q::new((self.n / g1).checked_mul(o.n / g2)?, (self.d / g2).checked_mul(o.d / g1)?)
    }
    fn recip(self) -> Option<Q> {
        Q::new(self.d, self.n)
    }
    fn powi(self, k: i64) -> Option<Q> {
        let mut base = if k < 0 { self.recip()? } else { self };
        let mut e = k.unsigned_abs();
        let mut acc = Q::int(1);
        while e > 0 {
            if e & 1 == 1 {
                acc = acc.mul(base)?;
            }
            e >>= 1;
            if e > 0 {
                base = base.mul(base)?;
            }
        }
        Some(acc)
    }
    fn is_int(self) -> bool {
        self.d == 1
    }
    fn to_f64(self) -> f64 {
        self.n as f64 / self.d as f64
    }
}

/// Exact integer k-th root of a non-negative integer, if there is one.
fn int_root(x: i128, k: u32) -> Option<i128> {
    if x < 0 || k == 0 {
        return None;
    }
    if x < 2 || k == 1 {
        return Some(x);
    }
    let guess = (x as f64).powf(1.0 / k as f64).round() as i128;
    [guess - 1, guess, guess + 1].into_iter().find(|&r| r >= 0 && r.checked_pow(k) == Some(x))
}

/// Prime factors with odd multiplicity of a positive integer (trial division up
/// to 10^6; a larger leftover counts as one "prime").
fn odd_primes(mut x: i128) -> Vec<i128> {
    let mut out = Vec::new();
    let mut p: i128 = 2;
    while p * p <= x && p <= 1_000_000 {
        let mut k = 0;
        while x % p == 0 {
            x /= p;
            k += 1;
        }
        if k % 2 == 1 {
            out.push(p);
        }
        p += if p == 2 { 1 } else { 2 };
    }
    if x > 1 {
        match int_root(x, 2) {
            Some(_) => {}
            None => out.push(x),
        }
    }
    out
}

/// Deterministic hash for per-environment choices.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ceb9fe1a85ec53);
    h ^ (h >> 33)
}

fn unit_from(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Sign of `sqrt(p)` in environment `env` (always + in the principal ones; in
/// the six conjugate ones bit `env - 3` of a hash of `p`, so that any product of
/// distinct primes flips in at least one of them unless all hashes collide).
fn prime_sign(p: i128, env: usize) -> f64 {
    if env < PRINCIPAL {
        return 1.0;
    }
    if (mix((p as u64) ^ 0x9e37_79b9) >> (env - PRINCIPAL)) & 1 == 0 {
        1.0
    } else {
        -1.0
    }
}

fn pi_value(env: usize) -> f64 {
    if env < PRINCIPAL {
        std::f64::consts::PI
    } else {
        2.0 + 2.5 * unit_from(mix(0x7049 + env as u64))
    }
}

/// A random complex value for a symbol, spread over the four quadrants.
fn symbol_value(name: &str, env: usize) -> C {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let h1 = mix(h ^ (env as u64 + 1));
    let h2 = mix(h1 ^ 0x5555);
    let quad = [(1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0)][env % 4];
    C::new(quad.0 * (0.4 + unit_from(h1)), quad.1 * (0.3 + unit_from(h2)))
}

/// A sympy value, as far as zero-testing needs it.
#[derive(Debug, Clone)]
enum V {
    /// Integer / Rational.
    Q(Q),
    /// Float (real, 53-bit).
    F(f64),
    /// Float literal with more than 15 digits, which sympy gives more than 53
    /// bits: its exact binary value and precision (bits).
    D(Q, u32),
    /// Irrational, complex or symbolic: its value in each environment, and
    /// whether a Float took part.
    N([C; ENVS], bool),
}

/// Why the comparison fails (sympy raised, or gave something not `== 0`).
#[derive(Debug)]
pub struct Fail;

type R<T> = Result<T, Fail>;

struct Eval {
    /// Largest addend per environment (scale for the zero tolerance).
    scale: [f64; ENVS],
}

impl Eval {
    fn note(&mut self, v: &V) {
        match v {
            V::Q(q) => {
                let m = q.to_f64().abs();
                for s in self.scale.iter_mut() {
                    *s = s.max(m);
                }
            }
            V::F(f) => {
                for s in self.scale.iter_mut() {
                    *s = s.max(f.abs());
                }
            }
            V::D(q, _) => {
                for s in self.scale.iter_mut() {
                    *s = s.max(q.to_f64().abs());
                }
            }
            V::N(c, _) => {
                for (s, x) in self.scale.iter_mut().zip(c) {
                    *s = s.max(x.abs());
                }
            }
        }
    }

    /// Values pass through; only the operands of sums set the scale (rounding
    /// error is relative to what is added, not to literals later divided out).
    fn num(&mut self, v: V) -> V {
        v
    }
}

fn as_n(v: &V) -> ([C; ENVS], bool) {
    match v {
        V::Q(q) => ([C::new(q.to_f64(), 0.0); ENVS], false),
        V::F(f) => ([C::new(*f, 0.0); ENVS], true),
        V::D(q, _) => ([C::new(q.to_f64(), 0.0); ENVS], true),
        V::N(c, t) => (*c, *t),
    }
}

/// `q` rounded to `prec` significant bits (mpmath's round-half-even), exactly.
fn round_bits(q: Q, prec: u32) -> Option<Q> {
    if q.n == 0 {
        return Some(q);
    }
    // k such that 2^(prec-1) <= |q| 2^k < 2^prec
    let mut k = prec as i32 - 1 - q.to_f64().abs().log2().floor() as i32;
    let scaled = |k: i32| -> Option<(i128, i128)> {
        let (mut n, mut d) = (q.n.abs(), q.d);
        if k >= 0 {
            n = n.checked_mul(1i128.checked_shl(k as u32)?)?;
        } else {
            d = d.checked_mul(1i128.checked_shl((-k) as u32)?)?;
        }
        Some((n, d))
    };
    let lo = 1i128 << (prec - 1);
    let (mut n, mut d) = scaled(k)?;
    for _ in 0..3 {
        let m = n / d;
        if m < lo {
            k += 1;
        } else if m >= lo << 1 {
            k -= 1;
        } else {
            break;
        }
        (n, d) = scaled(k)?;
    }
    let (m, r) = (n / d, n % d);
    let m = match (2 * r).cmp(&d) {
        std::cmp::Ordering::Greater => m + 1,
        std::cmp::Ordering::Equal => m + (m & 1),
        std::cmp::Ordering::Less => m,
    };
    let m = if q.n < 0 { -m } else { m };
    if k >= 0 {
        Q::new(m, 1i128.checked_shl(k as u32)?)
    } else {
        Q::int(m).mul(Q::int(1i128.checked_shl((-k) as u32)?))
    }
}

/// The exact value of a finite f64.
fn f64_to_q(f: f64) -> Option<Q> {
    if !f.is_finite() {
        return None;
    }
    if f == 0.0 {
        return Some(Q::int(0));
    }
    let bits = f.abs().to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    let (m, e) = if exp == 0 { ((bits & ((1 << 52) - 1)) as i128, -1074) } else { (((bits & ((1 << 52) - 1)) | (1 << 52)) as i128, exp - 1075) };
    let m = if f < 0.0 { -m } else { m };
    if e >= 0 {
        Q::int(m).mul(Q::int(1i128.checked_shl(e as u32)?))
    } else if e > -127 {
        Q::new(m, 1i128.checked_shl((-e) as u32)?)
    } else {
        None
    }
}

/// Both operands exact, or one a wide Float: the two rationals and, for a
/// Float result, its precision (sympy uses the larger one; a Rational operand
/// is first rounded to it).
fn exact_pair(a: &V, b: &V) -> Option<(Q, Q, Option<u32>)> {
    let wide = |v: &V| match v {
        V::D(_, p) => Some(*p),
        _ => None,
    };
    let prec = match (wide(a), wide(b)) {
        (None, None) => {
            return match (a, b) {
                (V::Q(x), V::Q(y)) => Some((*x, *y, None)),
                _ => None,
            }
        }
        (Some(p), None) | (None, Some(p)) => p,
        (Some(p), Some(q)) => p.max(q),
    };
    let val = |v: &V| -> Option<Q> {
        match v {
            V::Q(q) => round_bits(*q, prec),
            V::D(q, _) => Some(*q),
            V::F(f) => f64_to_q(*f),
            V::N(..) => None,
        }
    };
    Some((val(a)?, val(b)?, Some(prec)))
}

/// The result of an exact operation: a Rational, or a wide Float rounded.
fn exact(q: Q, prec: Option<u32>) -> Option<V> {
    match prec {
        None => Some(V::Q(q)),
        // rounding never turns a nonzero value into zero: keep it exact if
        // the rounding itself does not fit
        Some(p) => Some(V::D(round_bits(q, p).unwrap_or(q), p)),
    }
}

/// A wide Float where exact modelling overflows: plain f64.
fn narrow(v: &V) -> V {
    match v {
        V::D(q, _) => V::F(q.to_f64()),
        other => other.clone(),
    }
}

fn zip_n(a: &V, b: &V, f: impl Fn(C, C) -> C) -> V {
    let (x, tx) = as_n(a);
    let (y, ty) = as_n(b);
    let mut out = [C::new(0.0, 0.0); ENVS];
    for i in 0..ENVS {
        out[i] = f(x[i], y[i]);
    }
    V::N(out, tx || ty)
}

fn add(a: &V, b: &V) -> V {
    if let Some((x, y, prec)) = exact_pair(a, b) {
        if let Some(v) = x.add(y).and_then(|q| exact(q, prec)) {
            return v;
        }
    }
    let (a, b) = (&narrow(a), &narrow(b));
    match (a, b) {
        (V::F(x), V::F(y)) => V::F(x + y),
        (V::Q(x), V::F(y)) => V::F(x.to_f64() + y),
        (V::F(x), V::Q(y)) => V::F(x + y.to_f64()),
        _ => zip_n(a, b, C::add),
    }
}

fn neg(a: &V) -> V {
    match a {
        V::Q(x) => match x.neg() {
            Some(q) => V::Q(q),
            None => V::F(-x.to_f64()),
        },
        V::F(x) => V::F(-x),
        V::D(x, p) => match x.neg() {
            Some(q) => V::D(q, *p),
            None => V::F(-x.to_f64()),
        },
        V::N(c, t) => V::N(c.map(|z| C::new(-z.re, -z.im)), *t),
    }
}

fn mul(a: &V, b: &V) -> V {
    if let Some((x, y, prec)) = exact_pair(a, b) {
        if let Some(v) = x.mul(y).and_then(|q| exact(q, prec)) {
            return v;
        }
    }
    let (a, b) = (&narrow(a), &narrow(b));
    match (a, b) {
        (V::F(x), V::F(y)) => V::F(x * y),
        (V::Q(x), V::F(y)) => V::F(x.to_f64() * y),
        (V::F(x), V::Q(y)) => V::F(x * y.to_f64()),
        // sympy: 0 * anything finite is 0 (exactly, even for Floats' partners).
        (V::Q(x), V::N(..)) | (V::N(..), V::Q(x)) if x.n == 0 => V::Q(Q::int(0)),
        _ => zip_n(a, b, C::mul),
    }
}

fn is_zero(v: &V) -> bool {
    match v {
        V::Q(q) | V::D(q, _) => q.n == 0,
        V::F(f) => *f == 0.0,
        V::N(..) => false,
    }
}

fn div(a: &V, b: &V) -> R<V> {
    if is_zero(b) {
        return Err(Fail); // zoo / nan: never == 0
    }
    if let Some((x, y, prec)) = exact_pair(a, b) {
        if let Some(v) = y.recip().and_then(|r| x.mul(r)).and_then(|q| exact(q, prec)) {
            return Ok(v);
        }
    }
    let (a, b) = (&narrow(a), &narrow(b));
    Ok(match (a, b) {
        (V::F(x), V::F(y)) => V::F(x / y),
        (V::Q(x), V::F(y)) => V::F(x.to_f64() / y),
        (V::F(x), V::Q(y)) => V::F(x / y.to_f64()),
        _ => zip_n(a, b, C::div),
    })
}

/// `sqrt` of an exact rational: exact when a perfect square, else a surd whose
/// sign per prime flips in the conjugate environments.
fn sqrt_q(q: Q) -> V {
    let (n, d) = (q.n, q.d);
    if let (Some(a), Some(b)) = (int_root(n.abs(), 2), int_root(d, 2)) {
        if n >= 0 {
            return V::Q(Q { n: a, d: b });
        }
        return V::N([C::new(0.0, a as f64 / b as f64); ENVS], false);
    }
    // sqrt(n/d) = sqrt(|n| d) / d (times i when n < 0)
    let m = match n.abs().checked_mul(d) {
        Some(m) => m,
        None => {
            let v = C::new(q.to_f64(), 0.0).sqrt();
            return V::N([v; ENVS], false);
        }
    };
    let primes = odd_primes(m);
    let mag = (m as f64).sqrt() / d as f64;
    let mut c = [C::new(0.0, 0.0); ENVS];
    for (env, slot) in c.iter_mut().enumerate() {
        let sign: f64 = primes.iter().map(|p| prime_sign(*p, env)).product();
        *slot = if n >= 0 { C::new(sign * mag, 0.0) } else { C::new(0.0, sign * mag) };
    }
    V::N(c, false)
}

fn sqrt(v: &V) -> V {
    match v {
        V::Q(q) => sqrt_q(*q),
        V::D(q, _) if q.n >= 0 => V::F(q.to_f64().sqrt()),
        V::D(q, _) => V::N([C::new(0.0, (-q.to_f64()).sqrt()); ENVS], true),
        V::F(f) if *f >= 0.0 => V::F(f.sqrt()),
        V::F(f) => V::N([C::new(0.0, (-f).sqrt()); ENVS], true),
        V::N(c, t) => V::N(c.map(C::sqrt), *t),
    }
}

fn pow(b: &V, e: &V) -> R<V> {
    if let (V::D(q, p), V::Q(k)) = (b, e) {
        if k.is_int() && k.n.unsigned_abs() <= 64 {
            if let Some(v) = q.powi(k.n as i64).and_then(|r| exact(r, Some(*p))) {
                return Ok(v);
            }
        }
    }
    let (b, e) = (&narrow(b), &narrow(e));
    match e {
        V::Q(q) if q.is_int() => {
            let k = i64::try_from(q.n).map_err(|_| Fail)?;
            if k < 0 && is_zero(b) {
                return Err(Fail); // zoo
            }
            Ok(match b {
                V::Q(x) => match (k.unsigned_abs() <= 4096).then(|| x.powi(k)).flatten() {
                    Some(r) => V::Q(r),
                    None => {
                        if k.unsigned_abs() > 100_000 {
                            return Err(Fail);
                        }
                        V::N([C::new(x.to_f64(), 0.0).powi(k); ENVS], false)
                    }
                },
                V::F(x) => V::F(x.powi(k.clamp(i32::MIN as i64, i32::MAX as i64) as i32)),
                V::N(c, t) => V::N(c.map(|z| z.powi(k)), *t),
                V::D(..) => return Err(Fail), // narrowed above
            })
        }
        V::Q(q) if q.d == 2 => {
            // x**(n/2) = sqrt(x)**n
            let r = sqrt(b);
            pow(&r, &V::Q(Q::int(q.n)))
        }
        V::Q(q) => {
            if let V::Q(x) = b {
                // exact root of a perfect power, e.g. 8**(1/3)
                if x.n > 0 && q.d <= 64 {
                    if let (Some(a), Some(c)) = (int_root(x.n, q.d as u32), int_root(x.d, q.d as u32)) {
                        return pow(&V::Q(Q { n: a, d: c }), &V::Q(Q::int(q.n)));
                    }
                }
            }
            let ef = C::new(q.to_f64(), 0.0);
            let (c, t) = as_n(b);
            Ok(V::N(c.map(|z| z.powc(ef)), t))
        }
        V::F(f) => match b {
            V::Q(x) if x.n > 0 => Ok(V::F(x.to_f64().powf(*f))),
            V::F(x) if *x > 0.0 => Ok(V::F(x.powf(*f))),
            _ => {
                let (c, _) = as_n(b);
                Ok(V::N(c.map(|z| z.powc(C::new(*f, 0.0))), true))
            }
        },
        V::N(ec, et) => {
            let (c, t) = as_n(b);
            let mut out = [C::new(0.0, 0.0); ENVS];
            for i in 0..ENVS {
                out[i] = c[i].powc(ec[i]);
            }
            Ok(V::N(out, t || *et))
        }
        V::D(..) => Err(Fail), // narrowed above
    }
}

// ------------------------------------------------------------------ tokens

#[derive(Debug, Clone)]
enum Tok {
    /// Integer literal value (sympy Integer); boxed to keep tokens small.
    Int(Box<V>),
    /// Float literal (sympy Float), or an imaginary literal.
    Flt(Box<V>),
    /// An undefined name: a sympy Symbol.
    Sym(String),
    /// A callable name from sympy's namespace.
    Func(&'static str),
    /// A non-callable name from sympy's namespace (`pi`, `oo`, ...).
    Const(&'static str),
    LParen,
    RParen,
    /// Any other operator: `+ - * / // ** ! ,` and the ones that make us fail.
    Op(&'static str),
}

/// sympy names with at most two distinct letters (all others are gated out by
/// `should_allow_eval`), split into callables and constants.
const FUNCS: [&str; 18] =
    ["csc", "eye", "ff", "fft", "frac", "fu", "gff", "hn1", "hn2", "im", "jn", "li", "ln", "ntt", "re", "rf", "sqrt", "yn"];
const CONSTS: [&str; 4] = ["nan", "oo", "pi", "zoo"];
/// Greek letter names `split_symbols` leaves whole (two letters or fewer; `pi` is a constant).
const GREEK: [&str; 3] = ["mu", "nu", "xi"];
const KEYWORDS: [&str; 35] = [
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def",
    "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is",
    "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// Python's `str.isdigit()`, approximated by Unicode "numeric" (`²`, `٣`).
fn is_digit_py(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && c.is_numeric())
}

/// Python's `Number` token at the start of `s` (longest per tokenize's regex).
fn lex_number(s: &[char]) -> usize {
    let digits = |i: usize| -> usize {
        // [0-9](?:_?[0-9])*
        let mut j = i;
        if j >= s.len() || !s[j].is_ascii_digit() {
            return i;
        }
        j += 1;
        loop {
            if j < s.len() && s[j].is_ascii_digit() {
                j += 1;
            } else if j + 1 < s.len() && s[j] == '_' && s[j + 1].is_ascii_digit() {
                j += 2;
            } else {
                return j;
            }
        }
    };
    let exponent = |i: usize| -> usize {
        if i < s.len() && (s[i] == 'e' || s[i] == 'E') {
            let mut j = i + 1;
            if j < s.len() && (s[j] == '+' || s[j] == '-') {
                j += 1;
            }
            let k = digits(j);
            if k > j {
                return k;
            }
        }
        i
    };
    // Floatnumber: Pointfloat | Expfloat
    let float = || -> usize {
        let a = digits(0);
        let point = if a > 0 && a < s.len() && s[a] == '.' {
            Some(digits(a + 1).max(a + 1))
        } else if a == 0 && !s.is_empty() && s[0] == '.' {
            let k = digits(1);
            (k > 1).then_some(k)
        } else {
            None
        };
        match point {
            Some(p) => exponent(p),
            None => {
                if a > 0 {
                    let e = exponent(a);
                    if e > a {
                        return e;
                    }
                }
                0
            }
        }
    };
    let f = float();
    let a = digits(0);
    // Imagnumber first: digits[jJ] | Floatnumber[jJ]
    if a > 0 && a < s.len() && (s[a] == 'j' || s[a] == 'J') {
        return a + 1;
    }
    if f > 0 && f < s.len() && (s[f] == 'j' || s[f] == 'J') {
        return f + 1;
    }
    if f > 0 {
        return f;
    }
    // Intnumber: hex | bin | oct | dec
    if s.len() >= 3 && s[0] == '0' {
        let radix = match s[1] {
            'x' | 'X' => 16,
            'b' | 'B' => 2,
            'o' | 'O' => 8,
            _ => 0,
        };
        if radix > 0 {
            let mut j = 2;
            let mut any = false;
            loop {
                if j < s.len() && s[j].is_digit(radix) {
                    j += 1;
                    any = true;
                } else if j + 1 < s.len() && s[j] == '_' && s[j + 1].is_digit(radix) {
                    j += 2;
                    any = true;
                } else {
                    break;
                }
            }
            if any {
                return j;
            }
        }
    }
    if !s.is_empty() && s[0] == '0' {
        // 0(?:_?0)*
        let mut j = 1;
        loop {
            if j < s.len() && s[j] == '0' {
                j += 1;
            } else if j + 1 < s.len() && s[j] == '_' && s[j + 1] == '0' {
                j += 2;
            } else {
                return j;
            }
        }
    }
    a
}

/// The exact value of a decimal literal (`12.5e-3`), if it fits an i128 rational.
fn exact_decimal(text: &str) -> Option<Q> {
    let (mantissa, exp) = match text.split_once('e') {
        Some((m, e)) => (m, e.parse::<i32>().ok()?),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{int_part}{frac_part}");
    let n: i128 = if digits.is_empty() { 0 } else { digits.parse().ok()? };
    let scale = exp - frac_part.len() as i32;
    let ten = Q::int(10);
    let p = ten.powi(scale.unsigned_abs() as i64)?;
    if scale >= 0 {
        Q::int(n).mul(p)
    } else {
        Q::int(n).mul(p.recip()?)
    }
}

/// sympy's `auto_number` for one Number token.
fn number_value(text: &str) -> R<Tok> {
    let (body, imag) = match text.strip_suffix(['j', 'J']) {
        Some(b) => (b, true),
        None => (text, false),
    };
    let clean: String = body.chars().filter(|&c| c != '_').collect();
    let lower = clean.to_ascii_lowercase();
    let is_float = lower.contains('.') || (lower.contains('e') && !lower.starts_with("0x"));
    let v = if is_float {
        // sympy: dps = max(15, digits of Decimal(text)), prec = round((dps+1) log2 10)
        let mantissa = lower.split('e').next().unwrap_or("");
        let dps = mantissa.replace('.', "").trim_start_matches('0').len().max(1);
        let wide = (dps > 15)
            .then(|| {
                let prec = ((dps as f64 + 1.0) * std::f64::consts::LOG2_10).round() as u32;
                let q = exact_decimal(&lower)?;
                (prec < 120).then(|| round_bits(q, prec).map(|b| V::D(b, prec))).flatten()
            })
            .flatten();
        match wide {
            Some(v) => v,
            None => V::F(lower.parse::<f64>().map_err(|_| Fail)?),
        }
    } else {
        let (digits, radix) = if let Some(h) = lower.strip_prefix("0x") {
            (h, 16)
        } else if let Some(b) = lower.strip_prefix("0b") {
            (b, 2)
        } else if let Some(o) = lower.strip_prefix("0o") {
            (o, 8)
        } else {
            (lower.as_str(), 10)
        };
        match i128::from_str_radix(digits, radix) {
            Ok(n) => V::Q(Q::int(n)),
            Err(_) => V::N([C::new(digits.parse::<f64>().map_err(|_| Fail)?, 0.0); ENVS], false),
        }
    };
    if imag {
        let (c, t) = as_n(&v);
        return Ok(Tok::Flt(Box::new(V::N(c.map(|z| C::new(-z.im, z.re)), t || is_float))));
    }
    Ok(if is_float { Tok::Flt(Box::new(v)) } else { Tok::Int(Box::new(v)) })
}

/// `auto_symbol` + `split_symbols` for one NAME token.
fn push_name(name: &str, out: &mut Vec<Tok>) -> R<()> {
    if KEYWORDS.contains(&name) {
        return Err(Fail);
    }
    if let Some(f) = FUNCS.iter().find(|f| **f == name) {
        out.push(Tok::Func(f));
        return Ok(());
    }
    if let Some(c) = CONSTS.iter().find(|c| **c == name) {
        out.push(Tok::Const(c));
        return Ok(());
    }
    let splittable = !name.contains('_') && !GREEK.contains(&name) && name.chars().count() > 1;
    if !splittable {
        out.push(Tok::Sym(name.to_string()));
        return Ok(());
    }
    let chars: Vec<char> = name.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_digit_py(c) {
            let mut j = i;
            let mut digits = String::new();
            while j < chars.len() && is_digit_py(chars[j]) {
                digits.push(chars[j]);
                j += 1;
            }
            // Number('12'): an Integer; sympy rejects Number('²')
            if !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Fail);
            }
            out.push(number_value(&digits)?);
            i = j;
        } else {
            out.push(Tok::Sym(c.to_string()));
            i += 1;
        }
    }
    Ok(())
}

const OPS3: [&str; 5] = ["**=", "//=", ">>=", "<<=", "..."];
const OPS2: [&str; 19] =
    ["**", "//", "!=", "<=", ">=", "==", "<<", ">>", "->", ":=", "+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "@="];
const OPS1: &str = "+-*/%@&|^~<>=.,:;!";

/// Python's tokenizer + the name/number transformations; `Err` = sympy fails.
fn tokenize(s: &str) -> R<Vec<Tok>> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut depth = 0usize;
    while i < chars.len() {
        let c = chars[i];
        if c == ' ' || c == '\t' || c == '\u{c}' {
            i += 1;
            continue;
        }
        if c == '\n' || c == '\r' {
            if depth == 0 {
                return Err(Fail); // a second logical line: SyntaxError
            }
            // an NL token: Python ignores it inside parentheses, but it stops
            // sympy's implicit multiplication (`2\npi` is a SyntaxError)
            out.push(Tok::Op("nl"));
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let n = lex_number(&chars[i..]);
            if n == 0 {
                return Err(Fail);
            }
            let text: String = chars[i..i + n].iter().collect();
            out.push(number_value(&text)?);
            i += n;
            continue;
        }
        if c == '_' || c.is_alphanumeric() {
            let mut j = i;
            while j < chars.len() && (chars[j] == '_' || chars[j].is_alphanumeric()) {
                j += 1;
            }
            let name: String = chars[i..j].iter().collect();
            if !name.chars().next().is_some_and(|f| f == '_' || f.is_alphabetic()) {
                return Err(Fail);
            }
            push_name(&name, &mut out)?;
            i = j;
            continue;
        }
        if c == '(' {
            depth += 1;
            if depth > MAX_PAREN_DEPTH {
                return Err(Fail);
            }
            out.push(Tok::LParen);
            i += 1;
            continue;
        }
        if c == ')' {
            depth = depth.checked_sub(1).ok_or(Fail)?;
            out.push(Tok::RParen);
            i += 1;
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
        if let Some(op) = OPS3.iter().find(|o| rest.starts_with(**o)) {
            out.push(Tok::Op(op));
            i += 3;
            continue;
        }
        if let Some(op) = OPS2.iter().find(|o| rest.starts_with(**o)) {
            out.push(Tok::Op(op));
            i += 2;
            continue;
        }
        if let Some(k) = OPS1.find(c) {
            out.push(Tok::Op(&OPS1[k..k + c.len_utf8()]));
            i += 1;
            continue;
        }
        // brackets, quotes, '#', '$', '?', non-ASCII symbols...: sympy fails
        return Err(Fail);
    }
    if depth != 0 {
        return Err(Fail);
    }
    Ok(out)
}

fn ends_operand(t: &Tok) -> bool {
    matches!(t, Tok::Int(_) | Tok::Flt(_) | Tok::Sym(_) | Tok::Const(_) | Tok::RParen | Tok::Op("!"))
}

fn starts_operand(t: &Tok) -> bool {
    matches!(t, Tok::Int(_) | Tok::Flt(_) | Tok::Sym(_) | Tok::Const(_) | Tok::LParen | Tok::Func(_))
}

/// `implicit_multiplication` and `implicit_application`.
fn implicit(tokens: Vec<Tok>) -> Vec<Tok> {
    let mut out: Vec<Tok> = Vec::with_capacity(tokens.len() + tokens.len() / 2 + 1);
    for t in tokens {
        if let Some(prev) = out.last() {
            if ends_operand(prev) && starts_operand(&t) {
                out.push(Tok::Op("*"));
            }
        }
        out.push(t);
    }
    // NL tokens have done their job (blocking `*`); Python then ignores them.
    // Two operands separated only by NL stay adjacent: the parser rejects that.
    out.retain(|t| !matches!(t, Tok::Op("nl")));
    // implicit application: `sqrt 2` -> sqrt(2), `sqrt 2*x` -> sqrt(2*x)
    if !out.iter().enumerate().any(|(i, t)| matches!(t, Tok::Func(_)) && out.get(i + 1).is_some_and(|n| starts_operand(n) && !matches!(n, Tok::LParen))) {
        return out;
    }
    let mut res = Vec::with_capacity(out.len() + 4);
    let mut i = 0;
    while i < out.len() {
        let t = out[i].clone();
        let applies = matches!(t, Tok::Func(_)) && out.get(i + 1).is_some_and(|n| starts_operand(n) && !matches!(n, Tok::LParen));
        res.push(t);
        i += 1;
        if applies {
            res.push(Tok::LParen);
            let end = application_end(&out, i);
            res.extend(out[i..end].iter().cloned());
            res.push(Tok::RParen);
            i = end;
        }
    }
    res
}

/// End of the argument of an implicitly applied function starting at `i`: one
/// unit, extended over `*` / `**` and the unit after each.
fn application_end(t: &[Tok], i: usize) -> usize {
    let unit_end = |mut j: usize| -> usize {
        // Func followed by a parenthesised group, or a parenthesised group, or an atom
        if matches!(t.get(j), Some(Tok::Func(_))) {
            j += 1;
        }
        if matches!(t.get(j), Some(Tok::LParen)) {
            let mut d = 0usize;
            while j < t.len() {
                match t[j] {
                    Tok::LParen => d += 1,
                    Tok::RParen => {
                        d = d.saturating_sub(1);
                        if d == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            return t.len();
        }
        (j + 1).min(t.len())
    };
    let mut end = unit_end(i);
    while matches!(t.get(end), Some(Tok::Op("*")) | Some(Tok::Op("**"))) && end + 1 < t.len() {
        end = unit_end(end + 1);
    }
    end
}

// ------------------------------------------------------------------ parser

struct Parser<'a> {
    t: &'a [Tok],
    i: usize,
    ev: Eval,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.t.get(self.i)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// arith: term (('+'|'-') term)*
    fn arith(&mut self) -> R<V> {
        let mut v = self.term()?;
        loop {
            if self.eat("+") {
                let r = self.term()?;
                self.ev.note(&v);
                self.ev.note(&r);
                v = add(&v, &r);
            } else if self.eat("-") {
                let r = self.term()?;
                self.ev.note(&v);
                self.ev.note(&r);
                v = add(&v, &neg(&r));
            } else {
                return Ok(v);
            }
        }
    }

    /// term: factor (('*'|'/'|'//') factor)*
    fn term(&mut self) -> R<V> {
        let mut v = self.factor(0)?;
        loop {
            if self.eat("*") {
                let r = self.factor(0)?;
                v = self.ev.num(mul(&v, &r));
            } else if self.eat("/") {
                let r = self.factor(0)?;
                v = self.ev.num(div(&v, &r)?);
            } else if self.eat("//") {
                let r = self.factor(0)?;
                v = match (&v, &r) {
                    (V::Q(a), V::Q(b)) if b.n != 0 => {
                        let q = a.mul(b.recip().ok_or(Fail)?).ok_or(Fail)?;
                        V::Q(Q::int(q.n.div_euclid(q.d)))
                    }
                    _ => return Err(Fail),
                };
            } else {
                return Ok(v);
            }
        }
    }

    /// factor: ('+'|'-') factor | power
    fn factor(&mut self, chain: usize) -> R<V> {
        if chain > MAX_CHAIN {
            return Err(Fail);
        }
        if self.eat("-") {
            let v = self.factor(chain + 1)?;
            return Ok(neg(&v));
        }
        if self.eat("+") {
            return self.factor(chain + 1);
        }
        self.power(chain)
    }

    /// power: primary ['**' factor]
    fn power(&mut self, chain: usize) -> R<V> {
        let base = self.primary()?;
        if self.eat("**") {
            let e = self.factor(chain + 1)?;
            let v = pow(&base, &e)?;
            return Ok(self.ev.num(v));
        }
        Ok(base)
    }

    /// primary: atom, then `!` (factorial).
    fn primary(&mut self) -> R<V> {
        let mut v = self.atom()?;
        loop {
            if self.eat("!") {
                if self.eat("!") {
                    return Err(Fail); // factorial2: not modelled
                }
                v = factorial(&v)?;
            } else {
                return Ok(v);
            }
        }
    }

    fn atom(&mut self) -> R<V> {
        let t = self.peek().cloned().ok_or(Fail)?;
        self.i += 1;
        match t {
            Tok::Int(v) | Tok::Flt(v) => Ok(self.ev.num(*v)),
            Tok::Sym(name) => {
                let mut c = [C::new(0.0, 0.0); ENVS];
                for (env, slot) in c.iter_mut().enumerate() {
                    *slot = symbol_value(&name, env);
                }
                Ok(self.ev.num(V::N(c, false)))
            }
            Tok::Const("pi") => {
                let mut c = [C::new(0.0, 0.0); ENVS];
                for (env, slot) in c.iter_mut().enumerate() {
                    *slot = C::new(pi_value(env), 0.0);
                }
                Ok(self.ev.num(V::N(c, false)))
            }
            Tok::Const(_) => Err(Fail), // oo, zoo, nan
            Tok::LParen => {
                let v = self.arith()?;
                if matches!(self.peek(), Some(Tok::RParen)) {
                    self.i += 1;
                    Ok(v)
                } else {
                    Err(Fail) // tuple, comparison, or garbage
                }
            }
            Tok::Func(f) => {
                if !matches!(self.peek(), Some(Tok::LParen)) {
                    return Err(Fail); // a bare function object
                }
                self.i += 1;
                let mut args = vec![self.arith()?];
                while self.eat(",") {
                    if matches!(self.peek(), Some(Tok::RParen)) {
                        break; // Python allows a trailing comma: sqrt(2,)
                    }
                    args.push(self.arith()?);
                }
                if !matches!(self.peek(), Some(Tok::RParen)) {
                    return Err(Fail);
                }
                self.i += 1;
                let v = apply(f, &args)?;
                Ok(self.ev.num(v))
            }
            Tok::RParen | Tok::Op(_) => Err(Fail),
        }
    }
}

fn factorial(v: &V) -> R<V> {
    match v {
        V::Q(q) if q.is_int() && q.n >= 0 && q.n <= 33 => {
            let mut acc: i128 = 1;
            for k in 2..=q.n {
                acc = acc.checked_mul(k).ok_or(Fail)?;
            }
            Ok(V::Q(Q::int(acc)))
        }
        _ => Err(Fail),
    }
}

fn apply(f: &str, args: &[V]) -> R<V> {
    match (f, args) {
        ("sqrt", [x]) => Ok(sqrt(x)),
        ("ln", [x]) => {
            match x {
                V::Q(q) if *q == Q::int(1) => return Ok(V::Q(Q::int(0))),
                _ if is_zero(x) => return Err(Fail),
                _ => {}
            }
            let (c, t) = as_n(x);
            Ok(V::N(c.map(C::ln), t))
        }
        _ => Err(Fail),
    }
}

/// Is `simplify(parse_expr(expr)) == 0` (sympy with implicit multiplication)?
pub fn sympy_diff_is_zero(expr: &str) -> bool {
    let src = super::pystr::strip(expr).replace('^', "**");
    let tokens = match tokenize(&src) {
        Ok(t) => implicit(t),
        Err(_) => return false,
    };
    let mut p = Parser { t: &tokens, i: 0, ev: Eval { scale: [0.0; ENVS] } };
    let v = match p.arith() {
        Ok(v) => v,
        Err(_) => return false,
    };
    if p.i != tokens.len() {
        return false;
    }
    match v {
        V::Q(q) | V::D(q, _) => q.n == 0,
        V::F(f) => f == 0.0,
        // f64 overflow (mpmath has no such limit: the difference is not zero)
        V::N(c, _) if c.iter().any(|z| !z.re.is_finite() || !z.im.is_finite()) => false,
        V::N(_, _) if p.ev.scale.iter().any(|s| !s.is_finite()) => false,
        V::N(c, taint) => {
            let n = if taint { ENVS } else { PRINCIPAL };
            (0..n).all(|i| {
                let tol = 1e-10 * p.ev.scale[i].max(1e-300);
                c[i].abs() <= tol
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sympy_diff_is_zero as z;

    #[test]
    fn exact_numbers() {
        assert!(z("(1/2)-(0.5)"));
        assert!(z("(12.5)-(25/2)"));
        assert!(!z("(0.1+0.2)-(0.3)"));
        assert!(!z("(1/3)-(0.3333333333333333)"));
        assert!(z("(2.0)-(2)"));
        assert!(!z("(3)-(4)"));
        assert!(z("(7+3/4)-(31/4)"));
        // 16+ digit Floats get more bits: equal at 56 bits, unequal at 56 vs 60
        assert!(z("(3840/289)-(13.28719723183391)"));
        assert!(!z("(0.8356488482647211)-(0.83564884826472110)"));
    }

    #[test]
    fn implicit_multiplication() {
        assert!(z("(2x)-(2*x)"));
        assert!(z("(2(3))-(6)"));
        assert!(z("(2sqrt(3))-(sqrt(12))"));
        assert!(z("(2pi)-(pi*2)"));
        assert!(z("(xy)-(y*x)"));
        assert!(z("(05)-(0)"));
        assert!(!z("(2sqrt2)-(2*sqrt(2))"));
        assert!(z("(sqrt 2)-(sqrt(2))"));
    }

    #[test]
    fn radicals_pi_symbols() {
        assert!(z("(sqrt(3)/2)-(1/2*sqrt(3))"));
        assert!(z("(sqrt(8))-(2sqrt(2))"));
        assert!(!z("(sqrt(2)/2)-(0.7071067811865476)"));
        assert!(z("(0.5sqrt(3))-(sqrt(3)/2)"));
        assert!(!z("(3.14)-(pi)"));
        assert!(z("((x+1)^2)-(x^2+2x+1)"));
        assert!(!z("(sqrt(x^2))-(x)"));
        assert!(z("(-2+7i)-(7i-2)"));
        assert!(z("(1/(sqrt(2)-1))-(sqrt(2)+1)"));
        assert!(!z("(sqrt(21)/5)-(0.916515138991168)"));
    }

    #[test]
    fn failures_are_not_equal() {
        assert!(!z("(1,2)-(1,2)"));
        assert!(!z("(x<3)-(x<3)"));
        assert!(!z("(1/0)-(1/0)"));
        assert!(!z("(oo)-(oo)"));
        assert!(!z("(5!)-(121)"));
        assert!(z("(5!)-(120)"));
        assert!(!z(&format!("{}1{}", "(".repeat(300), ")".repeat(300))));
        assert!(!z("(288pi)-(288 \npi)"));
        assert!(z("(sqrt(2))-(sqrt(2,))"));
        assert!(!z("(2)-(1e400)"));
    }
}
