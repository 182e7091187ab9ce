//! `--report FILE.html`: one self-contained page (inline SVG, no script, nothing fetched) with
//! the figures and three plots: connections over time, throughput over time, and the latency
//! percentile curve.

use std::fmt::Write as _;

use crate::report::{Report, human_us};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const BOTTOM: f64 = 36.0;
const TOP: f64 = 28.0;
const RIGHT: f64 = 16.0;

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round number at or above `v` for an axis maximum.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|m| *m >= v)
        .unwrap_or(10.0 * mag)
}

/// One line chart: `x` shared, each series `(name, colour, ys)`; `x_labels` place tick labels.
fn chart(
    title: &str,
    y_unit: &str,
    x: &[f64],
    series: &[(&str, &str, Vec<f64>)],
    x_labels: &[(f64, String)],
) -> String {
    let mut svg = String::new();
    let (x_min, x_max) = (
        x.first().copied().unwrap_or(0.0),
        x.last().copied().unwrap_or(1.0).max(1e-9),
    );
    let y_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.2.iter().copied())
            .fold(0.0, f64::max),
    );
    let px = |v: f64| LEFT + (v - x_min) / (x_max - x_min).max(1e-9) * (WIDTH - LEFT - RIGHT);
    let py = |v: f64| HEIGHT - BOTTOM - v / y_max * (HEIGHT - BOTTOM - TOP);
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{}</text>"#,
        esc(title)
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let y = py(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&format_axis(v, y_unit))
        );
    }
    for (v, label) in x_labels {
        let x = px(*v);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            HEIGHT - BOTTOM,
            HEIGHT - BOTTOM + 16.0,
            esc(label)
        );
    }
    for (i, (name, colour, ys)) in series.iter().enumerate() {
        let points: Vec<String> = x
            .iter()
            .zip(ys)
            .map(|(a, b)| format!("{:.1},{:.1}", px(*a), py(*b)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{}"/>"#,
            points.join(" ")
        );
        let lx = WIDTH - RIGHT - 180.0;
        let ly = TOP + 14.0 * i as f64;
        let _ = write!(
            svg,
            r#"<rect x="{lx}" y="{:.1}" width="10" height="3" fill="{colour}"/><text x="{}" y="{:.1}">{}</text>"#,
            ly - 4.0,
            lx + 14.0,
            ly,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

fn format_axis(v: f64, unit: &str) -> String {
    match unit {
        "us" => human_us(v as u64),
        _ if v >= 10_000.0 => format!("{:.0}k", v / 1000.0),
        _ => format!("{v:.0}"),
    }
}

fn time_labels(x: &[f64]) -> Vec<(f64, String)> {
    let end = x.last().copied().unwrap_or(0.0);
    let step = nice_max(end / 6.0).max(0.2);
    let mut labels = Vec::new();
    let mut t = 0.0;
    while t <= end {
        labels.push((t, format!("{t:.0}s")));
        t += step;
    }
    labels
}

/// The whole page.
pub fn render(report: &Report) -> String {
    let x: Vec<f64> = report.series.iter().map(|p| p.t_s).collect();
    let open: Vec<f64> = report.series.iter().map(|p| p.open as f64).collect();
    let connects: Vec<f64> = report.series.iter().map(|p| p.connects_per_s).collect();
    let msgs: Vec<f64> = report.series.iter().map(|p| p.msgs_per_s).collect();
    let labels = time_labels(&x);
    let conns_svg = chart(
        "Connections open",
        "",
        &x,
        &[("open", "#1f77b4", open)],
        &labels,
    );
    let rate_svg = chart(
        "Throughput per second",
        "",
        &x,
        &[
            ("handshakes/s", "#2ca02c", connects),
            ("messages received/s", "#d62728", msgs),
        ],
        &labels,
    );
    // Latency curve on a "nines" axis: x = -log10(1 - q).
    let curve_x: Vec<f64> = report
        .latency_curve
        .iter()
        .map(|(p, _)| -(1.0 - p / 100.0).max(1e-9).log10())
        .collect();
    let curve_y: Vec<f64> = report
        .latency_curve
        .iter()
        .map(|(_, us)| *us as f64)
        .collect();
    let nines = [
        (0.0, "0%"),
        (1.0, "90%"),
        (2.0, "99%"),
        (3.0, "99.9%"),
        (4.0, "99.99%"),
        (5.0, "99.999%"),
    ]
    .iter()
    .map(|(v, l)| (*v, l.to_string()))
    .collect::<Vec<_>>();
    let latency_svg = if curve_x.is_empty() {
        "<p>No message latency was recorded in this scenario.</p>".to_string()
    } else {
        chart(
            "Message latency by percentile",
            "us",
            &curve_x,
            &[("latency", "#9467bd", curve_y)],
            &nines,
        )
    };
    let json = serde_json::to_value(report).unwrap_or_default();
    let mut rows = String::new();
    if let Some(map) = json.as_object() {
        for (k, v) in map {
            if matches!(k.as_str(), "series" | "latency_curve") {
                continue;
            }
            let _ = write!(
                rows,
                "<tr><th>{}</th><td>{}</td></tr>",
                esc(k),
                esc(&v.to_string())
            );
        }
    }
    let verdict = if report.verdict.is_empty() {
        r#"<p class="ok">PASS</p>"#.to_string()
    } else {
        format!(
            r#"<p class="fail">FAIL: {}</p>"#,
            esc(&report.verdict.join("; "))
        )
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ringcast-loadgen {scenario}</title>
<style>body{{font-family:sans-serif;max-width:800px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}th,td{{text-align:left;padding:2px 10px;border-bottom:1px solid #eee;vertical-align:top}}
td{{font-family:monospace;word-break:break-all}}.ok{{color:#2a2;font-weight:bold}}.fail{{color:#c22;font-weight:bold}}pre{{background:#f6f6f6;padding:1em}}</style>
</head><body>
<h1>ringcast-loadgen: {scenario}</h1>
{verdict}
<pre>{summary}</pre>
{conns_svg}
{rate_svg}
{latency_svg}
<h2>Every figure</h2>
<table>{rows}</table>
</body></html>
"#,
        scenario = esc(report.scenario),
        summary = esc(&report.summary()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        let cases = [
            (0.0, 1.0),
            (0.7, 1.0),
            (3.0, 5.0),
            (19_000.0, 20_000.0),
            (101.0, 200.0),
            (250.0, 250.0),
        ];
        for (v, want) in cases {
            assert_eq!(nice_max(v), want, "{v}");
        }
    }

    #[test]
    fn charts_are_self_contained_svg() {
        let svg = chart(
            "t<1>",
            "",
            &[0.0, 1.0],
            &[("a", "#000", vec![1.0, 2.0])],
            &[(0.0, "0s".into())],
        );
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("t&lt;1&gt;"));
        assert!(!svg.contains("http://") || svg.contains("xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.contains("<polyline"));
    }
}
