//! The HTML report: one self-contained page (inline CSS and SVG; no script, font, stylesheet or
//! link to anything outside the file).
//!
//! Layout: the run's name and extent, the summary (a table with units: wall time, the training
//! reward and accuracy at the start and the end, the evaluations at every evaluated step), then
//! **Overview**, the charts the issue asks for ([`OVERVIEW`]: accuracy per data set, reward,
//! KL, entropy, response length, contrastive loss, pair similarities, clip fraction, timings),
//! then every metric key not already shown, grouped by prefix ([`SECTIONS`]: eval, critic,
//! actor, con_lm_head, response_length, timing_s, rollout, other) into one chart per family
//! ([`family`]), and last the per-step table, folded. Every chart shares the run's step range
//! on x, so charts line up.
//!
//! What carries no information is not drawn: overview charts whose keys the run never logged
//! are named in one line, and series that hold one value at every step ([`flat`]: a constant
//! learning rate, a clip fraction of 0, a KL of 1e-11 with the KL off) are folded into one
//! "flat" line with their values; a chart all of whose series are flat disappears. Per-step
//! series of [`SMOOTH_FROM`] steps or more are drawn pale with their centred moving average on
//! top ([`smoothing_window`]), and the caption says over how many steps.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::svg::{escape, line_chart, Chart, Series};
use super::{compact, eval_table, fmt_cell, summary_rows, table_columns, Run};

/// Values closer to 0 than this at every step count as 0 (a KL of 1e-11 with the KL off, the
/// rounding of an on-policy ratio); a learning rate, the smallest value that must not fold, is
/// 1e-7 or more.
pub const NEAR_ZERO: f64 = 1e-7;

/// Series of at least this many points are smoothed.
pub const SMOOTH_FROM: usize = 30;

/// What a series that carries no information shows: its one value (`0`, `0.0001`), or `≈ 0`
/// when every value is within [`NEAR_ZERO`] of 0. None when it varies, or has fewer than 3
/// points (one evaluation is not flat, it is one evaluation).
pub fn flat(points: &[(f64, f64)]) -> Option<String> {
    if points.len() < 3 {
        return None;
    }
    let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let scale = lo.abs().max(hi.abs());
    if hi - lo <= 1e-9 * scale {
        Some(compact(lo))
    } else if scale < NEAR_ZERO {
        Some("≈ 0".into())
    } else {
        None
    }
}

/// The moving-average window for series of `n` points: n / 20 made odd, 5 to 51 (15 for 300
/// steps); None below [`SMOOTH_FROM`] points.
pub fn smoothing_window(n: usize) -> Option<usize> {
    (n >= SMOOTH_FROM).then(|| (n / 20).clamp(5, 51) | 1)
}

/// Takes the flat series out of `chart`, describing them in `flats` (`title value` for a
/// chart of one series, `title (label value, ...)` otherwise). Returns whether anything is
/// left to draw.
fn fold_flat(chart: &mut Chart, flats: &mut Vec<String>) -> bool {
    let total = chart.series.iter().filter(|s| !s.points.is_empty()).count();
    let mut folded: Vec<(String, String)> = vec![];
    chart.series.retain(|s| match flat(&s.points) {
        Some(v) => {
            folded.push((s.label.clone(), v));
            false
        }
        None => true,
    });
    if folded.len() == 1 && total == 1 {
        flats.push(format!("{} {}", chart.title, folded[0].1));
    } else if !folded.is_empty() {
        let parts: Vec<String> = folded.iter().map(|(l, v)| format!("{l} {v}")).collect();
        flats.push(format!("{} ({})", chart.title, parts.join(", ")));
    }
    chart.series.iter().any(|s| !s.points.is_empty())
}

/// Sets the chart's smoothing from its longest series and returns the caption's note on it.
/// Timings are left as they are: their spikes (the steps that also evaluate) are the
/// information, and an average would smear them over their neighbours.
fn smooth(chart: &mut Chart) -> Option<String> {
    if chart.title.starts_with("Timings") || chart.title.starts_with("timing_s/") {
        return None;
    }
    let n = chart.series.iter().map(|s| s.points.len()).max().unwrap_or(0);
    chart.smooth = smoothing_window(n);
    chart.smooth.map(|w| format!("Pale: each step; bold: the centred moving average of {w} steps."))
}

/// An overview chart: title, the keys it plots as `(pattern, label)` pairs, a fixed y range
/// when the values have one, and a caption. A pattern holds at most one `*`, which matches any
/// non-empty text (slashes included); the label's `{}` is replaced by that text. Keys matching
/// no overview pattern are plotted in the prefix sections.
pub struct Spec {
    pub title: &'static str,
    pub keys: &'static [(&'static str, &'static str)],
    pub y_range: Option<(f64, f64)>,
    pub caption: &'static str,
}

/// The title of the accuracy chart (it also draws training accuracy per data source from the
/// rewards tables, which are not metric keys).
pub const ACCURACY_TITLE: &str = "Accuracy per data set";

pub const OVERVIEW: &[Spec] = &[
    Spec {
        title: ACCURACY_TITLE,
        keys: &[("eval/*/accuracy", "eval {}")],
        y_range: Some((0.0, 1.0)),
        caption: "eval: held-out splits, at the steps where evaluation ran. train: the fraction of \
                  the step's sampled responses judged correct, per data source (rewards.parquet).",
    },
    Spec {
        title: "Reward (training batch mean)",
        keys: &[
            ("critic/rewards/mean", "total reward"),
            ("critic/score/mean", "verifier score"),
            ("critic/contrastive_reward/mean", "contrastive reward"),
        ],
        y_range: None,
        caption: "Total reward = verifier score + contrastive reward (+ any penalties), averaged over \
                  the step's responses.",
    },
    Spec {
        title: "KL",
        keys: &[("actor/kl_loss", "kl_loss (to reference)"), ("actor/ppo_kl", "ppo_kl (old to new policy)")],
        y_range: None,
        caption: "kl_loss: KL to the frozen reference (0 when none is used); ppo_kl: how far the \
                  update moved the policy from the one that sampled.",
    },
    Spec {
        title: "Entropy",
        keys: &[("actor/entropy", "entropy")],
        y_range: None,
        caption: "Mean per-token entropy of the policy on the sampled responses (nats).",
    },
    Spec {
        title: "Response length (tokens)",
        keys: &[("response_length/mean", "mean"), ("response_length/max", "max"), ("response_length/min", "min")],
        y_range: None,
        caption: "",
    },
    Spec {
        title: "Contrastive loss",
        keys: &[
            ("con_lm_head/loss", "head loss"),
            ("con_lm_head/individual_loss_correct/mean", "per-sample, correct (mean)"),
            ("con_lm_head/individual_loss_incorrect/mean", "per-sample, incorrect (mean)"),
        ],
        y_range: None,
        caption: "The contrastive head's loss before its step, and the mean per-sample loss of correct \
                  and incorrect responses (non-anchors count 0).",
    },
    Spec {
        title: "Pair similarity, head embeddings",
        keys: &[
            ("con_lm_head/embed/pos_pair_sim/mean", "pos (both correct)"),
            ("con_lm_head/embed/neg_pair_sim/mean", "neg (both incorrect)"),
            ("con_lm_head/embed/pos_neg_pair_sim/mean", "pos_neg (one of each)"),
        ],
        y_range: None,
        caption: "Mean cosine similarity of same-group response pairs in the contrastive head's \
                  embedding space.",
    },
    Spec {
        title: "Pair similarity, hidden states",
        keys: &[
            ("con_lm_head/hidden/pos_pair_sim/mean", "pos (both correct)"),
            ("con_lm_head/hidden/neg_pair_sim/mean", "neg (both incorrect)"),
            ("con_lm_head/hidden/pos_neg_pair_sim/mean", "pos_neg (one of each)"),
        ],
        y_range: None,
        caption: "The same pairs, with the policy's pooled hidden states.",
    },
    Spec {
        title: "Clip fraction",
        keys: &[("actor/pg_clipfrac", "pg_clipfrac"), ("actor/pg_clipfrac_lower", "pg_clipfrac_lower (dual clip)")],
        y_range: None,
        caption: "Fraction of response tokens whose probability ratio was clipped.",
    },
    Spec {
        title: "Timings (seconds per step)",
        keys: &[("timing_s/*", "{}")],
        y_range: None,
        caption: "",
    },
];

/// The prefix sections, in page order; keys with another first segment go to `other`.
pub const SECTIONS: &[&str] = &["eval", "critic", "actor", "con_lm_head", "response_length", "timing_s", "rollout", "other"];

/// Summary statistics that a family groups on one chart.
const STATS: &[&str] = &["mean", "max", "min", "std"];

/// The text `*` matched when `key` matches `pattern` (the whole key for a pattern without `*`).
pub fn glob(pattern: &str, key: &str) -> Option<String> {
    match pattern.split_once('*') {
        None => (pattern == key).then(|| key.to_string()),
        Some((pre, post)) => {
            let ok = key.len() > pre.len() + post.len() && key.starts_with(pre) && key.ends_with(post);
            ok.then(|| key[pre.len()..key.len() - post.len()].to_string())
        }
    }
}

/// The chart a key not on the overview goes to, and its label there:
/// `eval/<split>/<metric>` -> `eval/*/<metric>` labelled by split; `<prefix>/<stat>` for a
/// stat in mean/max/min/std -> `<prefix>` labelled by stat; `<prefix>/<name>/count` ->
/// `<prefix>/*/count` labelled by name; anything else is a chart of its own.
pub fn family(key: &str) -> (String, String) {
    if let Some(rest) = key.strip_prefix("eval/") {
        if let Some((split, metric)) = rest.rsplit_once('/') {
            return (format!("eval/*/{metric}"), split.to_string());
        }
    }
    if let Some((prefix, last)) = key.rsplit_once('/') {
        if STATS.contains(&last) {
            return (prefix.to_string(), last.to_string());
        }
        if last == "count" {
            if let Some((pp, name)) = prefix.rsplit_once('/') {
                return (format!("{pp}/*/count"), name.to_string());
            }
        }
    }
    (key.to_string(), key.rsplit('/').next().unwrap_or(key).to_string())
}

fn section_of(key: &str) -> &'static str {
    let first = key.split('/').next().unwrap_or("");
    SECTIONS.iter().copied().find(|s| *s == first && *s != "other").unwrap_or("other")
}

/// The overview charts that have data, the titles of those that have none, and the keys they
/// plot.
fn overview_charts<'a>(run: &'a Run, keys: &BTreeSet<&'a str>) -> (Vec<(Chart, &'static str)>, Vec<&'static str>, BTreeSet<&'a str>) {
    let (mut charts, mut missing, mut claimed) = (vec![], vec![], BTreeSet::new());
    for spec in OVERVIEW {
        let mut series = Vec::new();
        for (pattern, label) in spec.keys {
            for key in keys {
                if let Some(cap) = glob(pattern, key) {
                    claimed.insert(*key);
                    series.push(Series { label: label.replace("{}", &cap), points: points(run, key) });
                }
            }
        }
        if spec.title == ACCURACY_TITLE {
            let sources = run.data_sources();
            for ds in &sources {
                let pts = run
                    .train_accuracy
                    .iter()
                    .filter(|a| a.data_source == *ds)
                    .map(|a| (a.step as f64, a.accuracy()))
                    .collect();
                series.push(Series { label: format!("train {ds}"), points: pts });
            }
            if sources.is_empty() && keys.contains("critic/score/mean") {
                series.push(Series { label: "train (mean score)".into(), points: points(run, "critic/score/mean") });
            }
        }
        if series.iter().all(|s| s.points.is_empty()) {
            missing.push(spec.title);
            continue;
        }
        charts.push((Chart { title: spec.title.into(), series, x_range: None, y_range: spec.y_range, smooth: None }, spec.caption));
    }
    (charts, missing, claimed)
}

fn points(run: &Run, key: &str) -> Vec<(f64, f64)> {
    run.series(key).into_iter().map(|(s, v)| (s as f64, v)).collect()
}

/// The charts of every key the overview does not plot, by section and family. A family that
/// the overview shows in part (`.../pos_pair_sim/mean` is there, `max` and `min` are not) is
/// drawn whole; one it shows entirely is not repeated.
fn section_charts(run: &Run, keys: &BTreeSet<&str>, claimed: &BTreeSet<&str>) -> BTreeMap<usize, Vec<Chart>> {
    // section index -> family -> (series, whether any key is not on the overview)
    let mut families: BTreeMap<usize, BTreeMap<String, (Vec<Series>, bool)>> = BTreeMap::new();
    for key in keys {
        let (fam, label) = family(key);
        let section = SECTIONS.iter().position(|s| *s == section_of(key)).expect("a section");
        let entry = families.entry(section).or_default().entry(fam).or_default();
        entry.0.push(Series { label, points: points(run, key) });
        entry.1 |= !claimed.contains(key);
    }
    families
        .into_iter()
        .filter_map(|(section, fams)| {
            let charts: Vec<Chart> = fams
                .into_iter()
                .filter(|(_, (_, new))| *new)
                .map(|(title, (mut series, _))| {
                    // mean, max, min, std in that order rather than alphabetically.
                    series.sort_by_key(|s| STATS.iter().position(|st| *st == s.label).unwrap_or(STATS.len()));
                    let y_range = title.ends_with("accuracy").then_some((0.0, 1.0));
                    Chart { title, series, x_range: None, y_range, smooth: None }
                })
                .collect();
            (!charts.is_empty()).then_some((section, charts))
        })
        .collect()
}

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222;background:#fff}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:0 0 4px}
.meta{color:#555;margin:0 0 12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}
figure{margin:0;padding:10px 12px;border:1px solid #e5e5e5;border-radius:6px;background:#fcfcfc}
figcaption{font-size:12px;color:#666;margin-top:2px}
svg.chart{width:100%;height:auto;display:block}
table{border-collapse:collapse;font-size:12px;font-variant-numeric:tabular-nums}
td,th{padding:2px 8px;text-align:right;border-bottom:1px solid #eee}
th{position:sticky;top:0;background:#f5f5f5}
table.kv td{text-align:left;padding:3px 10px}
table.kv td:first-child{color:#555}
table.evals{margin-top:10px}
table.evals td:first-child,table.evals th:first-child{text-align:left}
.missing{color:#666;font-size:13px}
details{margin-top:28px}
details>summary{font-size:18px;font-weight:bold;cursor:pointer;border-bottom:1px solid #ddd;padding-bottom:4px}
code{font-size:90%}
";

fn figure(o: &mut String, chart: &Chart, caption: &str) {
    let _ = write!(o, "<figure><h3>{}</h3>{}", escape(&chart.title), line_chart(chart));
    if !caption.is_empty() {
        let _ = write!(o, "<figcaption>{}</figcaption>", escape(caption));
    }
    o.push_str("</figure>\n");
}

/// The report page for `run`. Deterministic: the same run gives the same bytes.
pub fn render_html(run: &Run) -> String {
    let keys = run.keys();
    let first = run.steps.first().map_or(0, |s| s.step);
    let last = run.steps.last().map_or(0, |s| s.step);
    let x_range = Some((first as f64, last as f64));
    let (mut overview, missing, claimed) = overview_charts(run, &keys);
    let mut sections = section_charts(run, &keys, &claimed);
    for (c, _) in &mut overview {
        c.x_range = x_range;
    }
    for c in sections.values_mut().flatten() {
        c.x_range = x_range;
    }

    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>clipo run {}</title><style>{CSS}</style></head>\n<body>\n",
        escape(&run.name)
    );
    let _ = writeln!(o, "<h1>clipo run <code>{}</code></h1>", escape(&run.name));
    let sources: Vec<&str> = run.data_sources().into_iter().collect();
    let rl: Vec<u64> = run.steps.iter().map(|s| s.step).filter(|&s| s > 0).collect();
    let _ = writeln!(
        o,
        "<p class=\"meta\">{} RL step{} ({}){} in <code>{}</code>; {} metric keys{}.</p>",
        rl.len(),
        if rl.len() == 1 { "" } else { "s" },
        super::step_ranges(&rl),
        if first == 0 { " after the evaluation of the initial policy (step 0)" } else { "" },
        escape(&run.dir.display().to_string()),
        keys.len(),
        if sources.is_empty() { String::new() } else { format!("; training data: {}", escape(&sources.join(", "))) }
    );

    summary_html(&mut o, run);

    // What carries no information is folded into one line, and long series are smoothed.
    let mut flats = vec![];
    overview.retain_mut(|(c, _)| fold_flat(c, &mut flats));
    for charts in sections.values_mut() {
        charts.retain_mut(|c| fold_flat(c, &mut flats));
    }
    sections.retain(|_, charts| !charts.is_empty());

    o.push_str("<h2 id=\"overview\">Overview</h2>\n<div class=\"grid\">\n");
    for (chart, caption) in &mut overview {
        let note = smooth(chart);
        figure(&mut o, chart, &[*caption, note.as_deref().unwrap_or("")].join(" "));
    }
    o.push_str("</div>\n");
    if !missing.is_empty() {
        let _ = writeln!(o, "<p class=\"missing\">Not recorded in this run: {}.</p>", escape(&missing.join(", ")));
    }
    if !flats.is_empty() {
        let _ = writeln!(
            o,
            "<p class=\"missing\" id=\"flat\">Flat, not drawn (the same value at every step, or within {} of 0): {}.</p>",
            compact(NEAR_ZERO),
            escape(&flats.join("; "))
        );
    }

    for (section, charts) in &mut sections {
        let name = SECTIONS[*section];
        let heading = if name == "other" { "Other metrics".to_string() } else { format!("{name}/*") };
        let _ = write!(o, "<h2 id=\"{name}\">{}</h2>\n<div class=\"grid\">\n", escape(&heading));
        for chart in charts {
            let note = smooth(chart);
            figure(&mut o, chart, note.as_deref().unwrap_or(""));
        }
        o.push_str("</div>\n");
    }

    let cols = table_columns(run);
    let _ = write!(o, "<details id=\"table\"><summary>Per-step table ({} rows)</summary>\n<table><thead><tr>", run.steps.len());
    for c in &cols {
        let _ = write!(o, "<th>{}</th>", escape(&c.header));
    }
    o.push_str("</tr></thead><tbody>\n");
    for row in 0..run.steps.len() {
        o.push_str("<tr>");
        for c in &cols {
            let _ = write!(o, "<td>{}</td>", fmt_cell(c.values[row], c.decimals));
        }
        o.push_str("</tr>\n");
    }
    o.push_str("</tbody></table></details>\n</body></html>\n");
    o
}

/// The summary: figures with their units, then the evaluations at every evaluated step.
fn summary_html(o: &mut String, run: &Run) {
    let rows = summary_rows(run);
    let evals = eval_table(run);
    if rows.is_empty() && evals.is_none() {
        return;
    }
    o.push_str("<h2 id=\"summary\">Summary</h2>\n");
    if !rows.is_empty() {
        o.push_str("<table class=\"kv\">");
        for (k, v) in &rows {
            let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
        }
        o.push_str("</table>\n");
    }
    if let Some(t) = evals {
        o.push_str("<table class=\"evals\"><thead><tr><th>accuracy</th>");
        for s in &t.steps {
            let _ = write!(o, "<th>step {s}</th>");
        }
        o.push_str("<th>change</th></tr></thead><tbody>");
        for (split, values) in &t.rows {
            let _ = write!(o, "<tr><td>{}</td>", escape(split));
            for v in values {
                let _ = write!(o, "<td>{}</td>", v.map_or("-".into(), |v| format!("{:.2}%", 100.0 * v)));
            }
            let _ = write!(o, "<td>{}</td></tr>", escape(&t.change(values)));
        }
        o.push_str("</tbody></table>\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_captures_the_star() {
        assert_eq!(glob("eval/*/accuracy", "eval/test_p1/accuracy").as_deref(), Some("test_p1"));
        assert_eq!(glob("eval/*/accuracy", "eval/conrl/gsm8k/accuracy").as_deref(), Some("conrl/gsm8k"));
        assert_eq!(glob("eval/*/accuracy", "eval//accuracy"), None);
        assert_eq!(glob("actor/entropy", "actor/entropy").as_deref(), Some("actor/entropy"));
        assert_eq!(glob("timing_s/*", "timing_s"), None);
    }

    #[test]
    fn flat_series_are_named_with_their_value_and_varying_ones_are_not() {
        let pts = |v: &[f64]| v.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect::<Vec<_>>();
        assert_eq!(flat(&pts(&[1e-4, 1e-4, 1e-4])).as_deref(), Some("0.0001"));
        assert_eq!(flat(&pts(&[0.0, 0.0, 0.0, 0.0])).as_deref(), Some("0"));
        assert_eq!(flat(&pts(&[1e-11, -3e-11, 2e-8])).as_deref(), Some("≈ 0"));
        // A learning rate of 1e-7 that decays is information, and so is a clip fraction that
        // is 0 but once.
        assert_eq!(flat(&pts(&[1e-7, 5e-8, 1e-8])), None);
        assert_eq!(flat(&pts(&[0.0, 0.0, 0.01, 0.0])), None);
        // Two evaluations are not a flat series.
        assert_eq!(flat(&pts(&[0.5, 0.5])), None);
        assert_eq!(smoothing_window(29), None);
        assert_eq!(smoothing_window(30), Some(5));
        assert_eq!(smoothing_window(300), Some(15));
        assert_eq!(smoothing_window(100_000), Some(51));
        // A chart of a flat and a varying series keeps the varying one and names the other.
        let mut chart = Chart {
            title: "KL".into(),
            series: vec![Series { label: "kl_loss".into(), points: pts(&[0.0; 4]) }, Series { label: "ppo_kl".into(), points: pts(&[0.1, 0.2, 0.1, 0.3]) }],
            x_range: None,
            y_range: None,
            smooth: None,
        };
        let mut flats = vec![];
        assert!(fold_flat(&mut chart, &mut flats));
        assert_eq!(chart.series.len(), 1);
        assert_eq!(flats, ["KL (kl_loss 0)"]);
    }

    #[test]
    fn families_group_stats_counts_and_eval_splits() {
        assert_eq!(family("critic/advantages/max"), ("critic/advantages".into(), "max".into()));
        assert_eq!(family("con_lm_head/embed/pos_pair_sim/count"), ("con_lm_head/embed/*/count".into(), "pos_pair_sim".into()));
        assert_eq!(family("eval/test_p2/pass@4"), ("eval/*/pass@4".into(), "test_p2".into()));
        assert_eq!(family("actor/grad_norm"), ("actor/grad_norm".into(), "grad_norm".into()));
        assert_eq!(family("weird"), ("weird".into(), "weird".into()));
        assert_eq!(section_of("dynamic_sampling/dropped_groups"), "other");
        assert_eq!(section_of("other/x"), "other");
    }
}
