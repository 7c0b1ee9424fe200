//! Self-contained HTML pages: inline CSS and inline SVG, no script, and a
//! Content-Security-Policy that forbids the page to load anything at all,
//! so a page opened from a results folder or a mail attachment makes no
//! request. Elements carry ids, classes and `data-` attributes that the
//! tests (and anyone scraping a page) read.

use std::fmt::Write as _;

/// Escape text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => s.push_str("&amp;"),
            '<' => s.push_str("&lt;"),
            '>' => s.push_str("&gt;"),
            '"' => s.push_str("&quot;"),
            '\'' => s.push_str("&#39;"),
            c => s.push(c),
        }
    }
    s
}

/// A whole page around `body` (already HTML).
pub fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="generator" content="geohost {version}">
<title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1200px; }}
h1 {{ font-size: 1.4em; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }}
th {{ background: #f3f3f3; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.reference {{ color: #555; background: #fafafa; }}
tr.disqualified {{ color: #a00; }}
.note {{ color: #555; font-size: 0.9em; }}
.stale {{ background: #fff4e0; }}
.unverified {{ outline: 2px dashed #c60; }}
.verdict-pass {{ color: #070; font-weight: bold; }}
.verdict-fail {{ color: #a00; font-weight: bold; }}
code {{ font-size: 0.85em; }}
svg text {{ font-family: system-ui, sans-serif; font-size: 12px; }}
</style>
</head>
<body>
{body}
</body>
</html>
"#,
        version = env!("CARGO_PKG_VERSION"),
        title = escape(title),
    )
}

/// A chart's two axis lines and its axis labels (`class="axis-label x"`
/// under the x axis, `class="axis-label y"` rotated left of the y axis);
/// `frame` is (width, height, left, right, top, bottom) in pixels.
fn axes(s: &mut String, frame: (f64, f64, f64, f64, f64, f64), x_label: &str, y_label: &str) {
    let (w, h, left, right, top, bottom) = frame;
    let (ax, ay) = (left, h - bottom);
    let _ = writeln!(
        s,
        r##"<g class="axes" stroke="#444"><line x1="{ax}" y1="{top}" x2="{ax}" y2="{ay}"/><line x1="{ax}" y1="{ay}" x2="{}" y2="{ay}"/></g>"##,
        w - right
    );
    let _ = writeln!(s, r#"<text class="axis-label x" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, (left + w - right) / 2.0, h - 8.0, escape(x_label));
    let (lx, ly) = ((left / 5.0).round(), (top + ay) / 2.0);
    let _ =
        writeln!(s, r#"<text class="axis-label y" x="{lx}" y="{ly:.1}" text-anchor="middle" transform="rotate(-90 {lx} {ly:.1})">{}</text>"#, escape(y_label));
}

/// A point of a scatter plot.
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub label: String,
    /// Drawn highlighted and joined by the front line.
    pub on_front: bool,
}

/// A scatter plot as inline SVG: linear or log10 x axis, linear y axis,
/// ticks with values, the axis labels as `<text class="axis-label">`, each
/// point a `<circle>` with a `<title>` (its label), and the points on the
/// front joined by a polyline (`class="front"`).
pub fn scatter(id: &str, points: &[Point], x_label: &str, y_label: &str, log_x: bool) -> String {
    let (w, h, left, right, top, bottom) = (640.0, 400.0, 70.0, 20.0, 20.0, 50.0);
    let tx = |x: f64| if log_x { x.max(1e-300).log10() } else { x };
    let finite: Vec<&Point> = points.iter().filter(|p| tx(p.x).is_finite() && p.y.is_finite()).collect();
    let mut s = String::new();
    let _ = writeln!(s, r#"<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">"#, escape(id));
    let _ = writeln!(s, "<title>{} against {}</title>", escape(y_label), escape(x_label));
    if finite.is_empty() {
        let _ = writeln!(s, r#"<text x="{}" y="{}">nothing to plot</text></svg>"#, w / 2.0 - 50.0, h / 2.0);
        return s;
    }
    let span = |v: Vec<f64>| {
        let (lo, hi) = v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let pad = if hi > lo { 0.08 * (hi - lo) } else { 0.5_f64.max(0.1 * hi.abs()) };
        (lo - pad, hi + pad)
    };
    let (x0, x1) = span(finite.iter().map(|p| tx(p.x)).collect());
    let (y0, y1) = span(finite.iter().map(|p| p.y).collect());
    let px = |x: f64| left + (tx(x) - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - y) / (y1 - y0) * (h - top - bottom);
    // Axes, ticks and labels.
    let (ax, ay) = (left, h - bottom);
    axes(&mut s, (w, h, left, right, top, bottom), x_label, y_label);
    for i in 0..=4 {
        let v = x0 + (x1 - x0) * i as f64 / 4.0;
        let shown = if log_x { format!("{:.1e}", 10f64.powf(v)) } else { format!("{v:.3}") };
        let x = left + (v - x0) / (x1 - x0) * (w - left - right);
        let _ = writeln!(s, r#"<text class="tick x" x="{x:.1}" y="{:.1}" text-anchor="middle">{shown}</text>"#, ay + 16.0);
        let v = y0 + (y1 - y0) * i as f64 / 4.0;
        let _ = writeln!(s, r#"<text class="tick y" x="{:.1}" y="{:.1}" text-anchor="end">{v:.3}</text>"#, ax - 6.0, py(v) + 4.0);
    }
    // The front, then the points.
    let mut front: Vec<&&Point> = finite.iter().filter(|p| p.on_front).collect();
    front.sort_by(|a, b| a.x.total_cmp(&b.x));
    if front.len() > 1 {
        let line: Vec<String> = front.iter().map(|p| format!("{:.1},{:.1}", px(p.x), py(p.y))).collect();
        let _ = writeln!(s, r##"<polyline class="front" fill="none" stroke="#c60" stroke-width="1.5" points="{}"/>"##, line.join(" "));
    }
    for p in &finite {
        let (class, fill) = if p.on_front { ("point front", "#c60") } else { ("point", "#36c") };
        let _ =
            writeln!(s, r#"<circle class="{class}" cx="{:.1}" cy="{:.1}" r="5" fill="{fill}"><title>{}</title></circle>"#, px(p.x), py(p.y), escape(&p.label));
    }
    s.push_str("</svg>\n");
    s
}

/// A series of a line chart.
pub struct Series {
    pub label: String,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

const COLOURS: [&str; 8] = ["#36c", "#c60", "#393", "#c33", "#939", "#099", "#996", "#666"];

/// Axis range of `values`, padded; log10 when `log`.
fn range(values: impl Iterator<Item = f64>, log: bool) -> Option<(f64, f64)> {
    let t = |v: f64| if log { v.log10() } else { v };
    let (lo, hi) = values.map(t).filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    if !lo.is_finite() {
        return None;
    }
    let pad = if hi > lo { 0.05 * (hi - lo) } else { 0.5 };
    Some((lo - pad, hi + pad))
}

/// A line chart as inline SVG (`<polyline class="series">` per series
/// with a `<title>`, a legend, ticks and `axis-label` texts); `log_y`
/// plots log10 of y.
pub fn lines(id: &str, series: &[Series], x_label: &str, y_label: &str, log_y: bool) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 360.0, 70.0, 300.0, 20.0, 50.0);
    let mut s = format!(r#"<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">"#, escape(id));
    let _ = writeln!(s, "<title>{} against {}</title>", escape(y_label), escape(x_label));
    let (Some((x0, x1)), Some((y0, y1))) =
        (range(series.iter().flat_map(|c| c.x.iter().copied()), false), range(series.iter().flat_map(|c| c.y.iter().copied()), log_y))
    else {
        s.push_str("<text x=\"300\" y=\"180\">nothing to plot</text></svg>\n");
        return s;
    };
    let ty = |y: f64| if log_y { y.log10() } else { y };
    let px = |x: f64| left + (x - x0) / (x1 - x0) * (w - left - right);
    let py = |y: f64| top + (y1 - ty(y)) / (y1 - y0) * (h - top - bottom);
    let (ax, ay) = (left, h - bottom);
    axes(&mut s, (w, h, left, right, top, bottom), x_label, y_label);
    for i in 0..=4 {
        let v = x0 + (x1 - x0) * i as f64 / 4.0;
        let _ = writeln!(s, r#"<text class="tick x" x="{:.1}" y="{:.1}" text-anchor="middle">{v:.1}</text>"#, px(v), ay + 16.0);
        let v = y0 + (y1 - y0) * i as f64 / 4.0;
        let shown = if log_y { format!("{:.3}", 10f64.powf(v)) } else { format!("{v:.3}") };
        let yv = top + (y1 - v) / (y1 - y0) * (h - top - bottom);
        let _ = writeln!(s, r#"<text class="tick y" x="{:.1}" y="{:.1}" text-anchor="end">{shown}</text>"#, ax - 6.0, yv + 4.0);
    }
    for (i, c) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<String> =
            c.x.iter().zip(&c.y).filter(|(x, y)| x.is_finite() && ty(**y).is_finite()).map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = writeln!(
            s,
            r#"<polyline class="series" data-label="{0}" fill="none" stroke="{colour}" stroke-width="1" points="{1}"><title>{0}</title></polyline>"#,
            escape(&c.label),
            points.join(" ")
        );
        let ly = top + 16.0 * i as f64 + 6.0;
        let _ = writeln!(
            s,
            r#"<g class="legend"><line x1="{0:.1}" y1="{ly:.1}" x2="{1:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{2:.1}" y="{3:.1}">{4}</text></g>"#,
            w - right + 10.0,
            w - right + 30.0,
            w - right + 35.0,
            ly + 4.0,
            escape(&c.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A bar chart as inline SVG: one `<rect class="bar">` per value, bars
/// labelled 0.. along x.
pub fn bars(id: &str, values: &[f64], x_label: &str, y_label: &str) -> String {
    let (w, h, left, right, top, bottom) = (420.0, 240.0, 60.0, 10.0, 14.0, 44.0);
    let mut s = format!(r#"<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">"#, escape(id));
    let _ = writeln!(s, "<title>{} by {}</title>", escape(y_label), escape(x_label));
    let max = values.iter().copied().fold(0.0_f64, f64::max).max(1e-300);
    let n = values.len().max(1) as f64;
    let bw = (w - left - right) / n;
    let (ax, ay) = (left, h - bottom);
    axes(&mut s, (w, h, left, right, top, bottom), x_label, y_label);
    for (i, v) in values.iter().enumerate() {
        let bh = v / max * (ay - top);
        let _ = writeln!(
            s,
            r##"<rect class="bar" x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="#36c"><title>{i}: {v:.4}</title></rect>"##,
            ax + bw * i as f64 + 0.5,
            ay - bh,
            (bw - 1.0).max(0.5)
        );
    }
    let _ = writeln!(s, r#"<text class="tick y" x="{:.1}" y="{:.1}" text-anchor="end">{max:.3}</text>"#, ax - 4.0, top + 4.0);
    let _ = writeln!(s, r#"<text class="tick y" x="{:.1}" y="{ay:.1}" text-anchor="end">0</text>"#, ax - 4.0);
    s.push_str("</svg>\n");
    s
}

/// A tick value to about four significant digits.
fn short_number(v: f64) -> String {
    match v.abs() {
        a if a >= 1e5 || (a < 1e-3 && a > 0.0) => format!("{v:.3e}"),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.4}"),
    }
}

/// A sample cloud of a pairs chart: a label and its draws, one row of
/// values per parameter.
pub struct Cloud<'a> {
    pub label: &'a str,
    pub rows: &'a [Vec<f64>],
}

/// At most this many dots per cloud and panel: enough to show a
/// posterior's shape, few enough to keep the page light.
const PAIR_DOTS: usize = 400;

/// A pairs chart (corner plot) as one inline SVG: a panel for every pair
/// of parameters i > j (`<g class="pair" data-x=NAME_j data-y=NAME_i>`),
/// each cloud's draws as dots (thinned evenly to at most 400 per panel)
/// in the cloud's colour, `marker` as a cross, parameter names and axis
/// ends under the bottom row and left of the first column, and a legend.
/// Each axis spans the central 99% of all clouds' draws and the marker. Fewer than two
/// parameters: no chart. Non-finite draws are skipped.
pub fn pairs(id: &str, names: &[String], clouds: &[Cloud], marker: Option<&[f64]>) -> String {
    let d = names.len();
    if d < 2 {
        return String::new();
    }
    let (panel, gap, left, bottom, legend) = (150.0, 10.0, 110.0, 44.0, 400.0);
    let side = (d - 1) as f64 * (panel + gap);
    let (w, h) = (left + side + legend, side + bottom);
    let mut s = format!(r#"<svg id="{}" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img">"#, escape(id));
    let _ = writeln!(s, "<title>pairs of {}</title>", escape(&names.join(", ")));
    // Each axis spans the pooled draws' central 99% and the marker, so a
    // few stray draws do not squeeze the clouds; draws outside are not drawn.
    let spans: Vec<(f64, f64)> = (0..d)
        .map(|k| {
            let mut pooled: Vec<f64> =
                clouds.iter().flat_map(|c| c.rows.get(k).map(Vec::as_slice).unwrap_or_default().iter().copied()).filter(|v| v.is_finite()).collect();
            pooled.sort_by(f64::total_cmp);
            let quantile = |q: f64| pooled.get(((pooled.len() - 1) as f64 * q).round() as usize).copied();
            let central = if pooled.is_empty() { vec![] } else { vec![quantile(0.005).unwrap_or(0.0), quantile(0.995).unwrap_or(1.0)] };
            range(central.into_iter().chain(marker.map(|m| m[k])), false).unwrap_or((0.0, 1.0))
        })
        .collect();
    let at = |k: usize, v: f64| (v - spans[k].0) / (spans[k].1 - spans[k].0) * panel;
    let inside = |k: usize, v: f64| v.is_finite() && (spans[k].0..=spans[k].1).contains(&v);
    for i in 1..d {
        for j in 0..i {
            let (x0, y0) = (left + j as f64 * (panel + gap), (i - 1) as f64 * (panel + gap));
            let _ = writeln!(s, r#"<g class="pair" data-x="{}" data-y="{}" transform="translate({x0:.1} {y0:.1})">"#, escape(&names[j]), escape(&names[i]));
            let _ = writeln!(s, r##"<rect class="frame" width="{panel}" height="{panel}" fill="none" stroke="#bbb"/>"##);
            for (c, cloud) in clouds.iter().enumerate() {
                let (Some(xs), Some(ys)) = (cloud.rows.get(j), cloud.rows.get(i)) else { continue };
                let step = xs.len().div_ceil(PAIR_DOTS).max(1);
                let _ = write!(s, r#"<g class="cloud" data-label="{}" fill="{}" fill-opacity="0.35">"#, escape(cloud.label), COLOURS[c % COLOURS.len()]);
                for (x, y) in xs.iter().zip(ys).step_by(step).filter(|(x, y)| inside(j, **x) && inside(i, **y)) {
                    let _ = write!(s, r#"<circle cx="{:.1}" cy="{:.1}" r="1.5"/>"#, at(j, *x), panel - at(i, *y));
                }
                s.push_str("</g>\n");
            }
            if let Some(m) = marker {
                let (mx, my) = (at(j, m[j]), panel - at(i, m[i]));
                let _ = writeln!(
                    s,
                    r##"<g class="marker" stroke="#000" stroke-width="1.5"><line x1="{:.1}" y1="{my:.1}" x2="{:.1}" y2="{my:.1}"/><line x1="{mx:.1}" y1="{:.1}" x2="{mx:.1}" y2="{:.1}"/></g>"##,
                    mx - 6.0,
                    mx + 6.0,
                    my - 6.0,
                    my + 6.0
                );
            }
            if i == d - 1 {
                let _ = writeln!(
                    s,
                    r#"<text class="axis-label x" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                    panel / 2.0,
                    panel + 30.0,
                    escape(&names[j])
                );
                let (lo, hi) = spans[j];
                let _ = writeln!(
                    s,
                    r#"<text class="tick x" x="0" y="{0:.1}" font-size="10">{1}</text><text class="tick x" x="{panel}" y="{0:.1}" font-size="10" text-anchor="end">{2}</text>"#,
                    panel + 13.0,
                    short_number(lo),
                    short_number(hi)
                );
            }
            if j == 0 {
                let (lo, hi) = spans[i];
                let _ = writeln!(
                    s,
                    r#"<text class="tick y" x="-4" y="{panel}" font-size="10" text-anchor="end">{}</text><text class="tick y" x="-4" y="10" font-size="10" text-anchor="end">{}</text>"#,
                    short_number(lo),
                    short_number(hi)
                );
                let (lx, ly) = (-60.0, panel / 2.0);
                let _ = writeln!(
                    s,
                    r#"<text class="axis-label y" x="{lx}" y="{ly:.1}" text-anchor="middle" transform="rotate(-90 {lx} {ly:.1})">{}</text>"#,
                    escape(&names[i])
                );
            }
            s.push_str("</g>\n");
        }
    }
    for (c, cloud) in clouds.iter().enumerate() {
        let (lx, ly) = (left + side + 10.0, 16.0 * c as f64 + 12.0);
        let _ = writeln!(
            s,
            r#"<g class="legend"><circle cx="{lx:.1}" cy="{ly:.1}" r="4" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text></g>"#,
            COLOURS[c % COLOURS.len()],
            lx + 10.0,
            ly + 4.0,
            escape(cloud.label)
        );
    }
    if marker.is_some() {
        let ly = 16.0 * clouds.len() as f64 + 12.0;
        let _ = writeln!(s, r#"<g class="legend"><text x="{:.1}" y="{:.1}">+ truth</text></g>"#, left + side + 6.0, ly + 4.0);
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_pages_forbid_every_load() {
        assert_eq!(escape(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let p = page("a <b>", "<p>hi</p>");
        assert!(p.contains("default-src 'none'") && p.contains("<title>a &lt;b&gt;</title>") && !p.contains("<script"));
        let svg = scatter(
            "s",
            &[Point { x: 10.0, y: 1.0, label: "<x>".into(), on_front: true }, Point { x: 1000.0, y: 0.5, label: "y".into(), on_front: true }],
            "fuel",
            "rmse",
            true,
        );
        assert!(svg.contains(r#"class="axis-label x""#) && svg.contains("&lt;x&gt;") && svg.contains("<polyline class=\"front\""));
    }

    #[test]
    fn a_pairs_chart_has_a_panel_per_pair_and_thins_its_clouds() {
        let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let rows: Vec<Vec<f64>> = (0..3).map(|k| (0..1000).map(|n| (n * (k + 1)) as f64).collect()).collect();
        let svg = pairs("p", &names, &[Cloud { label: "mcmc", rows: &rows }], Some(&[1.0, 2.0, 3.0]));
        assert_eq!(svg.matches("<g class=\"pair\"").count(), 3, "(b,a), (c,a), (c,b)");
        assert!(svg.contains(r#"data-x="a" data-y="c""#) && svg.contains("<g class=\"marker\""));
        assert_eq!(svg.matches("<circle cx").count(), 3 * 334 + 1, "1000 draws thinned to every third, and the legend's dot");
        assert!(pairs("p", &names[..1], &[], None).is_empty());
    }
}
