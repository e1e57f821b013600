//! SVG plots for reports (plotters, SVG backend, no system fonts: text is emitted as SVG
//! `<text>` and laid out with plotters' built-in metrics, so the bytes do not depend on the
//! machine). Two shapes cover every plot: a strip/box chart of values per group and a line
//! chart with optional bands and markers.

use crate::stats::resample::percentile_sorted as quantile;
use anyhow::{anyhow, Result};
use plotters::prelude::*;

/// Ten distinguishable colours (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of series `i`.
pub fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing a plot: {e:?}")
}

/// Lower and upper bound of finite values, padded by 5 % (and never empty).
fn bounds(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs().max(1.0) * 1e-3);
    (lo - pad, hi + pad)
}

/// A label for an integer position of a categorical axis (empty between categories).
fn category(labels: &[String], v: f64) -> String {
    let r = v.round();
    if (v - r).abs() > 1e-6 || r < 0.0 {
        return String::new();
    }
    labels.get(r as usize).cloned().unwrap_or_default()
}

/// Horizontal strip chart with a box (quartiles, median, whiskers to min and max) per
/// group, the first group on top; every value is a dot, spread vertically by its position.
pub fn strip_chart(title: &str, x_desc: &str, groups: &[(String, Vec<f64>)]) -> Result<String> {
    let n = groups.len().max(1);
    let mut svg = String::new();
    {
        let height = 120 + 42 * n as u32;
        let root = SVGBackend::with_string(&mut svg, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (lo, hi) = bounds(groups.iter().flat_map(|g| g.1.iter().copied()));
        let labels: Vec<String> = groups.iter().rev().map(|g| g.0.clone()).collect();
        let fmt = |v: &f64| category(&labels, *v);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(290)
            .build_cartesian_2d(lo..hi, -0.5..(n as f64 - 0.5))
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(BLACK.mix(0.03))
            .disable_y_mesh()
            .y_labels(n + 1)
            .y_label_formatter(&fmt)
            .x_desc(x_desc)
            .draw()
            .map_err(err)?;
        for (i, (_, vals)) in groups.iter().enumerate() {
            let y = (n - 1 - i) as f64;
            let c = color(i);
            let mut s: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
            s.sort_by(f64::total_cmp);
            if s.len() >= 2 {
                let (q1, med, q3) = (quantile(&s, 25.0), quantile(&s, 50.0), quantile(&s, 75.0));
                chart
                    .draw_series([Rectangle::new(
                        [(q1, y - 0.25), (q3, y + 0.25)],
                        c.mix(0.15).filled(),
                    )])
                    .map_err(err)?;
                chart
                    .draw_series([
                        PathElement::new(vec![(q1, y - 0.25), (q3, y - 0.25)], c),
                        PathElement::new(vec![(q1, y + 0.25), (q3, y + 0.25)], c),
                        PathElement::new(vec![(q1, y - 0.25), (q1, y + 0.25)], c),
                        PathElement::new(vec![(q3, y - 0.25), (q3, y + 0.25)], c),
                        PathElement::new(vec![(med, y - 0.3), (med, y + 0.3)], c.stroke_width(3)),
                        PathElement::new(vec![(s[0], y), (q1, y)], c),
                        PathElement::new(vec![(q3, y), (s[s.len() - 1], y)], c),
                    ])
                    .map_err(err)?;
            }
            let k = vals.len().max(2) as f64;
            chart
                .draw_series(vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(
                    |(j, &v)| {
                        let dy = -0.18 + 0.36 * j as f64 / (k - 1.0);
                        Circle::new((v, y + dy), 3, c.filled())
                    },
                ))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// A line.
    Line,
    /// A line with a dot at every point.
    LineDots,
    /// Dots only.
    Dots,
    /// Triangles only (e.g. re-evaluated elites).
    Triangles,
}

/// One series of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text (empty: not in the legend).
    pub label: String,
    /// (x, y) points.
    pub points: Vec<(f64, f64)>,
    /// Optional band: (x, low, high).
    pub band: Vec<(f64, f64, f64)>,
    /// How it is drawn.
    pub mark: Mark,
    /// Palette index.
    pub color: usize,
}

/// A line chart.
#[derive(Debug, Clone, Default)]
pub struct LineChart {
    /// Title.
    pub title: String,
    /// X axis text.
    pub x_desc: String,
    /// Y axis text.
    pub y_desc: String,
    /// Names of integer x positions (a categorical x axis), or empty.
    pub x_categories: Vec<String>,
    /// Label only integer x values (counts such as trials).
    pub integer_x: bool,
    /// Series.
    pub series: Vec<Series>,
}

/// Draws a [`LineChart`].
pub fn line_chart(c: &LineChart) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let xs = c.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
        let (mut xlo, mut xhi) = bounds(xs);
        if !c.x_categories.is_empty() {
            (xlo, xhi) = (-0.3, c.x_categories.len() as f64 - 0.7);
        }
        let ys = c.series.iter().flat_map(|s| {
            s.points
                .iter()
                .map(|p| p.1)
                .chain(s.band.iter().flat_map(|b| [b.1, b.2]))
        });
        let (ylo, yhi) = bounds(ys);
        let cats = &c.x_categories;
        let fmt = |v: &f64| category(cats, *v);
        let int_fmt = |v: &f64| {
            if (v - v.round()).abs() < 1e-9 {
                format!("{}", v.round())
            } else {
                String::new()
            }
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(&c.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(xlo..xhi, ylo..yhi)
            .map_err(err)?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(c.x_desc.as_str())
            .y_desc(c.y_desc.as_str())
            .light_line_style(BLACK.mix(0.03));
        if c.integer_x && cats.is_empty() {
            mesh.x_label_formatter(&int_fmt);
        }
        if !cats.is_empty() {
            mesh.disable_x_mesh()
                .x_labels(cats.len() + 1)
                .x_label_formatter(&fmt);
        }
        mesh.draw().map_err(err)?;
        for s in &c.series {
            let col = color(s.color);
            if !s.band.is_empty() {
                let poly: Vec<(f64, f64)> = s
                    .band
                    .iter()
                    .map(|b| (b.0, b.2))
                    .chain(s.band.iter().rev().map(|b| (b.0, b.1)))
                    .collect();
                chart
                    .draw_series([Polygon::new(poly, col.mix(0.18).filled())])
                    .map_err(err)?;
            }
            let pts = s.points.iter().copied().filter(|p| p.1.is_finite());
            if s.mark == Mark::LineDots {
                chart
                    .draw_series(pts.clone().map(|p| Circle::new(p, 3, col.filled())))
                    .map_err(err)?;
            }
            let anno = match s.mark {
                Mark::Line | Mark::LineDots => chart
                    .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
                    .map_err(err)?,
                Mark::Dots => chart
                    .draw_series(
                        pts.clone()
                            .map(|p| Circle::new(p, 3, col.mix(0.6).filled())),
                    )
                    .map_err(err)?,
                Mark::Triangles => chart
                    .draw_series(pts.clone().map(|p| TriangleMarker::new(p, 6, col.filled())))
                    .map_err(err)?,
            };
            if !s.label.is_empty() {
                let mark = s.mark;
                anno.label(s.label.as_str()).legend(
                    move |(x, y)| -> DynElement<'static, SVGBackend, (i32, i32)> {
                        match mark {
                            Mark::Line | Mark::LineDots => {
                                PathElement::new(vec![(x, y), (x + 18, y)], col.stroke_width(3))
                                    .into_dyn()
                            }
                            Mark::Dots => Circle::new((x + 9, y), 3, col.filled()).into_dyn(),
                            Mark::Triangles => {
                                TriangleMarker::new((x + 9, y), 6, col.filled()).into_dyn()
                            }
                        }
                    },
                );
            }
        }
        if c.series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_deterministic_svg() {
        let g = vec![
            ("a".to_string(), vec![1.0, 2.0, 3.0]),
            ("b".to_string(), vec![2.5, f64::NAN]),
        ];
        let a = strip_chart("t", "x", &g).unwrap();
        assert_eq!(a, strip_chart("t", "x", &g).unwrap());
        assert!(a.starts_with("<svg") && a.trim_end().ends_with("</svg>"));
        let texts = |svg: &str| -> Vec<String> {
            roxmltree::Document::parse(svg)
                .unwrap()
                .descendants()
                .filter(|n| n.has_tag_name("text"))
                .map(|n| n.text().unwrap_or("").trim().to_string())
                .collect()
        };
        let t = texts(&a);
        assert!(t.contains(&"a".into()) && t.contains(&"b".into()), "{t:?}");
        let l = LineChart {
            title: "t".into(),
            x_desc: "x".into(),
            y_desc: "y".into(),
            x_categories: vec!["none".into(), "gate".into()],
            integer_x: false,
            series: vec![Series {
                label: "s".into(),
                points: vec![(0.0, 1.0), (1.0, 2.0)],
                band: vec![(0.0, 0.5, 1.5), (1.0, 1.5, 2.5)],
                mark: Mark::LineDots,
                color: 0,
            }],
        };
        let s = line_chart(&l).unwrap();
        let t = texts(&s);
        assert!(
            t.contains(&"none".into()) && t.contains(&"gate".into()),
            "{t:?}"
        );
        assert!(s.contains("<polygon"), "the band is drawn");
    }
}
