//! The HTML report: one self-contained page (inline CSS and SVG; no script, font, stylesheet or
//! link to anything outside the file).
//!
//! Layout: the run's name and extent, `summary.json`, then **Overview**, the charts the issue
//! asks for ([`OVERVIEW`]: accuracy per data set, reward, KL, entropy, response length,
//! contrastive loss, pair similarities, clip fraction, timings), then every metric key not
//! already shown, grouped by prefix ([`SECTIONS`]: eval, critic, actor, con_lm_head,
//! response_length, timing_s, rollout, other) into one chart per family ([`family`]), and last
//! the per-step table. Overview charts whose keys the run never logged are left out and named
//! in one line. Every chart shares the run's step range on x, so charts line up.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::svg::{escape, line_chart, Chart, Series};
use super::{fmt_cell, summary_entries, table_columns, Run};

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
        charts.push((Chart { title: spec.title.into(), series, x_range: None, y_range: spec.y_range }, spec.caption));
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
                    Chart { title, series, x_range: None, y_range }
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
table.kv td{text-align:left}
.missing{color:#666;font-size:13px}
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
    let _ = writeln!(
        o,
        "<p class=\"meta\">{} step{} logged ({first} to {last}) in <code>{}</code>; {} metric keys{}.</p>",
        run.steps.len(),
        if run.steps.len() == 1 { "" } else { "s" },
        escape(&run.dir.display().to_string()),
        keys.len(),
        if sources.is_empty() { String::new() } else { format!("; training data: {}", escape(&sources.join(", "))) }
    );

    let summary = summary_entries(run);
    if !summary.is_empty() {
        o.push_str("<h2 id=\"summary\">Summary</h2>\n<table class=\"kv\">");
        for (k, v) in &summary {
            let _ = write!(o, "<tr><td>{}</td><td>{}</td></tr>", escape(k), escape(v));
        }
        o.push_str("</table>\n");
    }

    o.push_str("<h2 id=\"overview\">Overview</h2>\n<div class=\"grid\">\n");
    for (chart, caption) in &overview {
        figure(&mut o, chart, caption);
    }
    o.push_str("</div>\n");
    if !missing.is_empty() {
        let _ = writeln!(o, "<p class=\"missing\">Not recorded in this run: {}.</p>", escape(&missing.join(", ")));
    }

    for (section, charts) in &sections {
        let name = SECTIONS[*section];
        let heading = if name == "other" { "Other metrics".to_string() } else { format!("{name}/*") };
        let _ = write!(o, "<h2 id=\"{name}\">{}</h2>\n<div class=\"grid\">\n", escape(&heading));
        for chart in charts {
            figure(&mut o, chart, "");
        }
        o.push_str("</div>\n");
    }

    o.push_str("<h2 id=\"table\">Per-step table</h2>\n<table><thead><tr>");
    let cols = table_columns(run);
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
    o.push_str("</tbody></table>\n</body></html>\n");
    o
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
