//! Results: medians and spread per target, ratios to the first target, Markdown tables, JSON
//! and one SVG bar chart per workload.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::workloads::Metric;

/// Every value of one metric of one workload for one target, across iterations.
#[derive(Debug, Default, Serialize)]
pub struct Series {
    /// Unit.
    pub unit: &'static str,
    /// Whether more is better.
    pub higher_is_better: bool,
    /// Values in iteration order.
    pub values: Vec<f64>,
}

/// All results: workload → metric → target → series.
#[derive(Debug, Default, Serialize)]
pub struct Results {
    /// Target names in the order given (the first is the ratio baseline).
    pub targets: Vec<String>,
    /// The values.
    pub data: BTreeMap<String, BTreeMap<String, BTreeMap<String, Series>>>,
    /// Metric orders per workload (as produced).
    pub order: BTreeMap<String, Vec<String>>,
    /// Targets or workloads that failed, with the error.
    pub failures: Vec<String>,
}

impl Results {
    /// Records the metrics of one run.
    pub fn add(&mut self, workload: &str, target: &str, metrics: &[Metric]) {
        let order = self.order.entry(workload.to_string()).or_default();
        for m in metrics {
            if !order.contains(&m.name) {
                order.push(m.name.clone());
            }
            let s = self
                .data
                .entry(workload.to_string())
                .or_default()
                .entry(m.name.clone())
                .or_default()
                .entry(target.to_string())
                .or_default();
            s.unit = m.unit;
            s.higher_is_better = m.higher_is_better;
            s.values.push(m.value);
        }
    }
}

/// Median of the values.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Markdown tables, one per workload, every metric with median, min–max and ratio to the
/// first target.
pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    for (workload, metrics) in &r.data {
        let _ = writeln!(out, "\n### {workload}\n");
        let _ = writeln!(
            out,
            "| metric | target | median | min – max | vs {} |",
            r.targets.first().map(String::as_str).unwrap_or("-")
        );
        let _ = writeln!(out, "|---|---|---|---|---|");
        for name in r.order.get(workload).into_iter().flatten() {
            let Some(by_target) = metrics.get(name) else {
                continue;
            };
            let base = r
                .targets
                .iter()
                .find_map(|t| by_target.get(t))
                .map(|s| median(&s.values));
            for t in &r.targets {
                let Some(s) = by_target.get(t) else { continue };
                let med = median(&s.values);
                let min = s.values.iter().cloned().fold(f64::INFINITY, f64::min);
                let max = s.values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                // A ratio to a zero baseline means nothing: shown as "–".
                let ratio = match base {
                    Some(b) if b > 0.0 => format!("{:.2}×", med / b),
                    _ => "–".to_string(),
                };
                let arrow = if s.higher_is_better { "↑" } else { "↓" };
                let _ = writeln!(
                    out,
                    "| {name} {arrow} | {t} | {} {} | {} – {} | {ratio} |",
                    fmt(med),
                    s.unit,
                    fmt(min),
                    fmt(max),
                );
            }
        }
    }
    if !r.failures.is_empty() {
        let _ = writeln!(out, "\nFailures:\n");
        for f in &r.failures {
            let _ = writeln!(out, "- {f}");
        }
    }
    out
}

/// One SVG bar chart of the main metric of each workload (medians, whiskers min–max).
pub fn plots(r: &Results, mains: &[(&str, &str)], dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (workload, main) in mains {
        let Some(by_target) = r.data.get(*workload).and_then(|m| m.get(*main)) else {
            continue;
        };
        let rows: Vec<(&String, &Series)> = r
            .targets
            .iter()
            .filter_map(|t| by_target.get(t).map(|s| (t, s)))
            .collect();
        if rows.is_empty() {
            continue;
        }
        let max = rows
            .iter()
            .flat_map(|(_, s)| s.values.iter().cloned())
            .fold(0.0f64, f64::max)
            .max(1e-9);
        let (w, bar_h, left) = (720.0, 28.0, 130.0);
        let h = 60.0 + rows.len() as f64 * (bar_h + 10.0);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"13\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"22\" font-size=\"16\">{workload}: {main} ({})</text>\n",
            if rows[0].1.higher_is_better { "higher is better" } else { "lower is better" }
        );
        for (i, (t, s)) in rows.iter().enumerate() {
            let y = 40.0 + i as f64 * (bar_h + 10.0);
            let med = median(&s.values);
            let bw = (w - left - 90.0) * med / max;
            let color = if t.starts_with("oxcrypt") {
                "#d95f02"
            } else {
                "#7570b3"
            };
            let min = s.values.iter().cloned().fold(f64::INFINITY, f64::min);
            let mx = s.values.iter().cloned().fold(0.0, f64::max);
            let (x0, x1) = (
                left + (w - left - 90.0) * min / max,
                left + (w - left - 90.0) * mx / max,
            );
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{t}</text>\n<rect x=\"{left}\" y=\"{y}\" width=\"{bw:.1}\" height=\"{bar_h}\" fill=\"{color}\"/>\n<line x1=\"{x0:.1}\" x2=\"{x1:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\n<text x=\"{:.1}\" y=\"{}\">{} {}</text>\n",
                left - 8.0,
                y + bar_h * 0.65,
                y + bar_h / 2.0,
                y + bar_h / 2.0,
                left + bw + 6.0,
                y + bar_h * 0.65,
                fmt(med),
                s.unit
            );
        }
        svg.push_str("</svg>\n");
        std::fs::write(dir.join(format!("{workload}.svg")), svg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(name: &str, v: f64) -> Metric {
        Metric {
            name: name.into(),
            unit: "MB/s",
            value: v,
            higher_is_better: true,
        }
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn tables_show_median_spread_and_ratio_to_the_first_target() {
        let mut r = Results {
            targets: vec!["a".into(), "b".into()],
            ..Results::default()
        };
        for v in [100.0, 300.0, 200.0] {
            r.add("w", "a", &[metric("speed", v)]);
        }
        for v in [50.0, 70.0, 60.0] {
            r.add("w", "b", &[metric("speed", v)]);
        }
        let md = markdown(&r);
        assert!(
            md.contains("| speed ↑ | a | 200.0 MB/s | 100.0 – 300.0 | 1.00× |"),
            "{md}"
        );
        assert!(
            md.contains("| speed ↑ | b | 60.0 MB/s | 50.0 – 70.0 | 0.30× |"),
            "{md}"
        );
        let dir = tempfile::tempdir().unwrap();
        plots(&r, &[("w", "speed")], dir.path()).unwrap();
        let svg = std::fs::read_to_string(dir.path().join("w.svg")).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(">a<") && svg.contains(">b<"));
    }
}
