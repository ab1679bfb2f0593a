//! Agreement of `clipo::verify` with the Python reference (REFERENCE.md §5).
//!
//! Reads JSONL cases `{data_source, response, ground_truth, expected}` written by
//! `scripts/verify_agreement.py` (scores from the Python reference), by default the
//! committed fixture `tests/fixtures/verify_cases.jsonl`, or the file named by the
//! `VERIFY_CASES` environment variable. Prints a table per data set and the
//! disagreements, and requires at least 99.5% agreement overall.

use std::collections::BTreeMap;

use clipo::verify::compute_score;

/// Agreement required overall (fraction of cases).
const MIN_AGREEMENT: f64 = 0.995;
/// Disagreements printed in full.
const SHOW: usize = 80;

fn cases_path() -> String {
    std::env::var("VERIFY_CASES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/verify_cases.jsonl").to_string())
}

fn short(s: &str, n: usize) -> String {
    let t: String = s.chars().rev().take(n).collect::<Vec<_>>().into_iter().rev().collect();
    if t.len() < s.len() { format!("…{t}") } else { t }
}

#[test]
fn agrees_with_python_reference() {
    let path = cases_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    // per data set: (cases, agree, reference says correct)
    let mut table: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{path}:{}: {e}", i + 1));
        let field = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{path}:{}: no string {k}", i + 1)).to_string();
        let (ds, resp, gt) = (field("data_source"), field("response"), field("ground_truth"));
        let expected = v["expected"].as_f64().unwrap_or_else(|| panic!("{path}:{}: no expected", i + 1)) as f32;
        let got = compute_score(&ds, &resp, &gt);
        let row = table.entry(ds.clone()).or_default();
        row.0 += 1;
        row.2 += (expected > 0.5) as usize;
        if got.score == expected {
            row.1 += 1;
        } else {
            bad.push((ds, gt, resp, expected, got));
        }
    }
    let (mut n, mut a) = (0, 0);
    println!("\n{:<28} {:>7} {:>7} {:>8} {:>9}", "data set", "cases", "agree", "%", "ref-right");
    for (ds, (c, ok, right)) in &table {
        println!("{ds:<28} {c:>7} {ok:>7} {:>7.2}% {right:>9}", 100.0 * *ok as f64 / *c as f64);
        n += c;
        a += ok;
    }
    let overall = a as f64 / n.max(1) as f64;
    println!("{:<28} {n:>7} {a:>7} {:>7.2}%", "overall", 100.0 * overall);
    println!("\n{} disagreements{}", bad.len(), if bad.len() > SHOW { format!(" (first {SHOW})") } else { String::new() });
    for (ds, gt, resp, exp, got) in bad.iter().take(SHOW) {
        println!(
            "- {ds} gt={gt:?} expected={exp} got={} ({}) extracted={:?}\n    response={:?}",
            got.score,
            got.reason.as_str(),
            got.extracted.as_deref().map(|e| short(e, 80)),
            short(resp, 160)
        );
    }
    assert!(n > 0, "{path}: no cases");
    assert!(overall >= MIN_AGREEMENT, "agreement {:.3}% < {:.1}%", 100.0 * overall, 100.0 * MIN_AGREEMENT);
}
