//! Hand-written SVG charts (no plotting crate): CDF lines and horizontal bars.

use std::fmt::Write as _;

const W: f64 = 760.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 200.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;
const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];

/// One line: a label, its points and how it is drawn.
#[derive(Debug, Clone)]
pub struct Series {
    /// Shown in the legend.
    pub label: String,
    /// `(x, y)` points, in x order.
    pub points: Vec<(f64, f64)>,
    /// A CSS color; `None` picks one from the palette by position.
    pub color: Option<&'static str>,
    /// Drawn dashed.
    pub dashed: bool,
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn header(title: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
        W / 2.0,
        escape(title)
    )
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten, at least `max`.
fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * p)
}

/// Lines over a linear x axis from 0 and a y axis from 0 to 1 (a CDF), with an optional
/// dashed vertical marker (a target).
pub fn cdf_chart(
    title: &str,
    x_label: &str,
    series: &[Series],
    marker: Option<(f64, &str)>,
) -> String {
    let x_max = nice_max(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .chain(marker.map(|m| m.0))
            .fold(0.0, f64::max),
    );
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let x = |v: f64| LEFT + v / x_max * pw;
    let y = |v: f64| TOP + ph - v * ph;
    let mut svg = header(title);
    for i in 0..=5 {
        let (fx, fy) = (i as f64 / 5.0 * x_max, i as f64 / 5.0);
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{TOP}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
             <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}%</text>",
            x(fx),
            x(fx),
            TOP + ph,
            x(fx),
            TOP + ph + 16.0,
            fmt_num(fx),
            y(fy),
            LEFT + pw,
            y(fy),
            LEFT - 6.0,
            y(fy) + 4.0,
            fy * 100.0
        );
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#444\"/>\
         <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">nodes done</text>",
        LEFT + pw / 2.0, H - 12.0, escape(x_label), TOP + ph / 2.0, TOP + ph / 2.0
    );
    if let Some((mx, label)) = marker {
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{TOP}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000\" stroke-dasharray=\"5,4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">{}</text>",
            x(mx), x(mx), TOP + ph, x(mx) + 4.0, TOP + 14.0, escape(label)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = s.color.unwrap_or(COLORS[i % COLORS.len()]);
        let dash = if s.dashed {
            " stroke-dasharray=\"7,4\""
        } else {
            ""
        };
        let pts: String = s
            .points
            .iter()
            .map(|&(px, py)| format!("{:.1},{:.1} ", x(px), y(py)))
            .collect();
        let ly = TOP + 10.0 + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            "<polyline points=\"{pts}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>\
             <line x1=\"{:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{color}\" stroke-width=\"3\"{dash}/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            LEFT + pw + 10.0, LEFT + pw + 30.0, LEFT + pw + 36.0, ly + 4.0, escape(&s.label)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// Horizontal bars, one per `(label, value, color)`, with an optional dashed target line.
pub fn bar_chart(
    title: &str,
    unit: &str,
    bars: &[(String, f64, &'static str)],
    target: Option<f64>,
) -> String {
    let x_max = nice_max(bars.iter().map(|b| b.1).chain(target).fold(0.0, f64::max));
    let left = 190.0;
    let pw = W - left - 40.0;
    let bar_h = ((H - TOP - BOTTOM) / bars.len().max(1) as f64).min(40.0);
    let x = |v: f64| left + v / x_max * pw;
    let mut svg = header(title);
    for (i, (label, value, color)) in bars.iter().enumerate() {
        let y = TOP + i as f64 * bar_h;
        let _ = writeln!(
            svg,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} {}</text>",
            y + 4.0,
            (x(*value) - left).max(1.0),
            bar_h - 8.0,
            color,
            left - 6.0,
            y + bar_h / 2.0 + 4.0,
            escape(label),
            x(*value) + 4.0,
            y + bar_h / 2.0 + 4.0,
            fmt_num(*value),
            escape(unit)
        );
    }
    if let Some(t) = target {
        let bottom = TOP + bars.len() as f64 * bar_h;
        let _ = writeln!(
            svg,
            "<line x1=\"{:.1}\" y1=\"{TOP}\" x2=\"{:.1}\" y2=\"{bottom:.1}\" stroke=\"#000\" stroke-dasharray=\"5,4\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">target {} {}</text>",
            x(t), x(t), x(t) + 4.0, bottom + 14.0, fmt_num(t), escape(unit)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_num(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_every_series() {
        let s = vec![
            Series {
                label: "ours".into(),
                points: vec![(0.0, 0.0), (3.0, 1.0)],
                color: None,
                dashed: false,
            },
            Series {
                label: "seed <push>".into(),
                points: vec![(1.0, 0.5)],
                color: Some("red"),
                dashed: true,
            },
        ];
        let svg = cdf_chart("t", "ms", &s, Some((150.0, "target")));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("ours") && svg.contains("seed &lt;push&gt;"));
        assert!(svg.contains("stroke=\"red\"") && svg.contains("stroke-dasharray=\"7,4\""));
        let bars = bar_chart("m", "KB", &[("a".into(), 3.0, "blue")], Some(10.0));
        assert!(bars.contains("target 10 KB"));
        assert_eq!(nice_max(130.0), 200.0);
    }
}
