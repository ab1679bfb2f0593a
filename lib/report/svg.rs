//! Line charts as inline SVG, written by hand: axes with "nice" ticks (1, 2, 5 x 10^k), grid
//! lines, one polyline per series (missing steps are skipped, the line joins the points that
//! exist), point markers with hover titles on short or sparse series, and a legend under the
//! plot. A chart with `smooth: Some(w)` draws each long series twice: every point as a thin
//! pale line, and its centred moving average over `w` points ([`moving_average`]) on top. No `xmlns` (inline SVG in HTML does not need one, and the page names no URL). The
//! output depends only on the input (fixed palette, fixed number formatting), so a report is
//! byte-for-byte reproducible.

use std::fmt::Write;

/// One line of a chart: `(x, y)` points in ascending x.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: title (shown by the page above the SVG and as the SVG's `<title>`), series,
/// optional fixed ranges (used when every point fits; accuracies use 0..1), and the window of
/// the moving average drawn over series longer than it (None: no smoothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub series: Vec<Series>,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    pub smooth: Option<usize>,
}

/// The centred moving average of `points` over `w` points (`w` odd): point i averages the
/// points i - w/2 ..= i + w/2 that exist, so the line does not lag, and near the ends, where
/// the window is cut, it still averages w/2 + 1 points or more rather than showing one noisy
/// step as the run's last value.
pub fn moving_average(points: &[(f64, f64)], w: usize) -> Vec<(f64, f64)> {
    let half = w / 2;
    let n = points.len();
    (0..n)
        .map(|i| {
            let window = &points[i.saturating_sub(half)..(i + half + 1).min(n)];
            (points[i].0, window.iter().map(|p| p.1).sum::<f64>() / window.len() as f64)
        })
        .collect()
}

/// Tableau 10: distinct, readable on white, friendly to the common colour blindness.
const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#79706e"];
/// After ten series the colours repeat with a dash pattern.
const DASHES: [&str; 3] = ["", "6 3", "2 2"];

// Geometry in SVG user units; the page scales the viewBox to the column width.
const WIDTH: f64 = 560.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 10.0;
const PLOT_H: f64 = 200.0;
const LEGEND_ROW: f64 = 16.0;
/// Series with at most this many points get markers (evaluation curves, short runs).
const MARKERS_UP_TO: usize = 60;

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A tick spacing of 1, 2 or 5 x 10^k giving about `target` intervals over `span`.
fn nice_step(span: f64, target: f64) -> f64 {
    let raw = span / target;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * mag
}

/// Expand `[lo, hi]` to whole tick steps and list the ticks.
fn axis(lo: f64, hi: f64, target: f64, min_step: f64) -> (f64, f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = (lo, hi);
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = (lo.abs() * 0.1).max(min_step.max(1e-9));
        lo -= pad;
        hi += pad;
    }
    let step = nice_step(hi - lo, target).max(min_step);
    let (lo, hi) = ((lo / step + 1e-9).floor() * step, (hi / step - 1e-9).ceil() * step);
    let n = ((hi - lo) / step).round() as usize;
    let ticks = (0..=n).map(|i| lo + i as f64 * step).collect();
    (lo, hi, step, ticks)
}

/// A tick label: as many decimals as the spacing needs; exponent form for tiny or huge values.
pub fn fmt_tick(v: f64, step: f64) -> String {
    if v.abs() < step * 1e-6 {
        return "0".into();
    }
    if v.abs() >= 1e6 || step < 1e-4 {
        // Enough mantissa digits to tell neighbouring ticks apart (1.05e-4 next to 1.00e-4).
        let digits = (v.abs() / step).log10().ceil().clamp(1.0, 6.0) as usize;
        return format!("{v:.digits$e}");
    }
    let decimals = (-step.log10()).ceil().clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// A value in hover titles: 4 significant digits.
fn fmt_value(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-4..6).contains(&mag) {
        return format!("{v:.3e}");
    }
    let decimals = (3 - mag).max(0) as usize;
    format!("{v:.decimals$}")
}

/// Rough label width in user units (11px sans-serif averages about 6.2 units a character).
fn text_width(s: &str) -> f64 {
    s.chars().count() as f64 * 6.2
}

/// Legend rows: each item is a swatch and its label, wrapped to the plot width.
fn legend_layout(labels: &[&str]) -> Vec<Vec<(usize, f64)>> {
    let avail = WIDTH - LEFT - RIGHT;
    let mut rows: Vec<Vec<(usize, f64)>> = vec![vec![]];
    let mut x = 0.0;
    for (i, l) in labels.iter().enumerate() {
        let w = 22.0 + text_width(l) + 14.0;
        if x > 0.0 && x + w > avail {
            rows.push(vec![]);
            x = 0.0;
        }
        rows.last_mut().expect("a row").push((i, LEFT + x));
        x += w;
    }
    rows
}

/// The chart as an `<svg>` element. Series without points are skipped; a chart with no points
/// at all draws its axes and says so.
pub fn line_chart(chart: &Chart) -> String {
    let series: Vec<&Series> = chart.series.iter().filter(|s| !s.points.is_empty()).collect();
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (mut x_lo, mut x_hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.0), b.max(p.0)));
    if let Some((a, b)) = chart.x_range {
        x_lo = x_lo.min(a);
        x_hi = x_hi.max(b);
    }
    let (mut y_lo, mut y_hi) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if let Some((a, b)) = chart.y_range {
        if y_lo >= a && y_hi <= b || !y_lo.is_finite() {
            (y_lo, y_hi) = (a, b);
        }
    }
    if !x_lo.is_finite() {
        (x_lo, x_hi) = (0.0, 1.0);
    }
    if !y_lo.is_finite() {
        (y_lo, y_hi) = (0.0, 1.0);
    }
    let (x0, x1, x_step, x_ticks) = axis(x_lo, x_hi, 8.0, 1.0);
    let (y0, y1, y_step, y_ticks) = axis(y_lo, y_hi, 5.0, 0.0);
    let plot_w = WIDTH - LEFT - RIGHT;
    let px = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
    let py = |y: f64| TOP + PLOT_H - (y - y0) / (y1 - y0) * PLOT_H;

    let labels: Vec<&str> = series.iter().map(|s| s.label.as_str()).collect();
    let legend = legend_layout(&labels);
    let legend_top = TOP + PLOT_H + 50.0;
    let height = legend_top + legend.len() as f64 * LEGEND_ROW + 2.0;

    let mut o = String::new();
    let _ = write!(
        o,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height:.0}" role="img" font-family="sans-serif" font-size="11"><title>{}</title>"#,
        escape(&chart.title)
    );
    // Grid, ticks and tick labels.
    for &t in &y_ticks {
        let y = py(t);
        let _ = write!(
            o,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 3.5,
            fmt_tick(t, y_step)
        );
    }
    for &t in &x_ticks {
        let x = px(t);
        let _ = write!(
            o,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/><line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
            TOP + PLOT_H,
            TOP + PLOT_H,
            TOP + PLOT_H + 4.0,
            TOP + PLOT_H + 16.0,
            fmt_tick(t, x_step)
        );
    }
    // Axes.
    let _ = write!(
        o,
        r##"<path d="M{LEFT} {TOP}V{:.1}H{:.1}" fill="none" stroke="#444"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444">step</text>"##,
        TOP + PLOT_H,
        WIDTH - RIGHT,
        LEFT + plot_w / 2.0,
        TOP + PLOT_H + 30.0
    );
    if series.is_empty() {
        let _ = write!(
            o,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no values recorded</text>"##,
            LEFT + plot_w / 2.0,
            TOP + PLOT_H / 2.0
        );
    }
    // Lines, then markers (on top), per series.
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let dash = DASHES[(i / PALETTE.len()) % DASHES.len()];
        let dash_attr = if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
        let label = escape(&s.label);
        let polyline = |o: &mut String, points: &[(f64, f64)], style: &str, title: &str| {
            let pts: Vec<String> = points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            let _ = write!(
                o,
                r#"<polyline points="{}" fill="none" stroke="{color}" {style} stroke-linejoin="round"{dash_attr}><title>{title}</title></polyline>"#,
                pts.join(" ")
            );
        };
        match chart.smooth {
            Some(w) if s.points.len() > w => {
                polyline(&mut o, &s.points, r#"stroke-width="1" stroke-opacity="0.3""#, &format!("{label}, each step"));
                polyline(&mut o, &moving_average(&s.points, w), r#"stroke-width="2""#, &format!("{label}, moving average of {w} steps"));
            }
            _ if s.points.len() > 1 => polyline(&mut o, &s.points, r#"stroke-width="1.6""#, &label),
            _ => {}
        }
        if s.points.len() <= MARKERS_UP_TO {
            for &(x, y) in &s.points {
                let _ = write!(
                    o,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.6" fill="{color}"><title>{label}: step {}, {}</title></circle>"#,
                    px(x),
                    py(y),
                    fmt_tick(x, 1.0),
                    fmt_value(y)
                );
            }
        }
    }
    // Legend.
    for (r, row) in legend.iter().enumerate() {
        let y = legend_top + r as f64 * LEGEND_ROW;
        for &(i, x) in row {
            let color = PALETTE[i % PALETTE.len()];
            let dash = DASHES[(i / PALETTE.len()) % DASHES.len()];
            let dash_attr = if dash.is_empty() { String::new() } else { format!(r#" stroke-dasharray="{dash}""#) };
            let _ = write!(
                o,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="2.4"{dash_attr}/><text x="{:.1}" y="{:.1}" fill="#222">{}</text>"##,
                y - 4.0,
                x + 18.0,
                y - 4.0,
                x + 22.0,
                y,
                escape(labels[i])
            );
        }
    }
    o.push_str("</svg>");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_cover_the_data() {
        let (lo, hi, step, ticks) = axis(0.13, 0.87, 5.0, 0.0);
        assert_eq!((lo, hi, step), (0.0, 1.0, 0.2));
        assert_eq!(ticks.len(), 6);
        let (lo, hi, step, _) = axis(1.0, 419.0, 8.0, 1.0);
        assert_eq!((lo, hi, step), (0.0, 500.0, 100.0));
        // One step: x still gets a range and integer ticks.
        let (lo, hi, step, _) = axis(3.0, 3.0, 8.0, 1.0);
        assert!(lo < 3.0 && hi > 3.0 && step >= 1.0);
        assert_eq!(fmt_tick(0.2, 0.2), "0.2");
        assert_eq!(fmt_tick(150.0, 50.0), "150");
        assert_eq!(fmt_tick(0.0004, 0.0002), "0.0004");
        assert_eq!(fmt_tick(2e-5, 1e-5), "2.0e-5");
        assert_eq!(fmt_tick(1e-12, 1e-5), "0");
        assert_eq!(fmt_tick(1.05e-4, 5e-6), "1.05e-4");
        assert_eq!(fmt_tick(1e-4, 5e-6), "1.00e-4");
        assert_eq!(fmt_tick(0.0, 0.25), "0");
    }

    #[test]
    fn chart_is_deterministic_and_escapes_labels() {
        let chart = Chart {
            title: "a <b>".into(),
            series: vec![
                Series { label: "x&y".into(), points: vec![(1.0, 0.5), (2.0, 0.7)] },
                Series { label: "empty".into(), points: vec![] },
            ],
            x_range: None,
            y_range: Some((0.0, 1.0)),
            smooth: None,
        };
        let svg = line_chart(&chart);
        assert_eq!(svg, line_chart(&chart));
        assert!(svg.contains("<title>a &lt;b&gt;</title>"));
        assert!(svg.contains("x&amp;y"));
        assert!(!svg.contains("empty"));
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert_eq!(svg.matches("<circle").count(), 2);
    }

    #[test]
    fn the_moving_average_is_centred_and_cut_at_the_ends() {
        let pts: Vec<(f64, f64)> = [1.0, 2.0, 6.0, 4.0, 5.0].iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
        let avg = moving_average(&pts, 3);
        // (1+2)/2, (1+2+6)/3, (2+6+4)/3, (6+4+5)/3, (4+5)/2
        assert_eq!(avg.iter().map(|p| p.1).collect::<Vec<_>>(), [1.5, 3.0, 4.0, 5.0, 4.5]);
        assert_eq!(avg.iter().map(|p| p.0).collect::<Vec<_>>(), [0.0, 1.0, 2.0, 3.0, 4.0]);
        // A long series of a smoothed chart: a pale line of every step and the average on top.
        let long = Series { label: "r".into(), points: (0..40).map(|i| (i as f64, (i % 2) as f64)).collect() };
        let svg = line_chart(&Chart { title: "t".into(), series: vec![long], x_range: None, y_range: None, smooth: Some(5) });
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("stroke-opacity=\"0.3\"") && svg.contains("<title>r, moving average of 5 steps</title>"));
    }
}
