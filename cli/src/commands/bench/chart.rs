//! An SVG chart of throughput against in-flight level: one panel per
//! scenario (and variant), bus and baseline side by side. Plain SVG, so it
//! shows in any browser and in the docs.

use std::fmt::Write as _;

use super::report::Row;

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 220.0;
const MARGIN: f64 = 48.0;

pub fn svg(rows: &[Row]) -> String {
    let mut panels: Vec<(String, Vec<&Row>)> = Vec::new();
    for row in rows {
        let title = if row.variant.is_empty() {
            row.scenario.clone()
        } else {
            format!("{} ({})", row.scenario, row.variant)
        };
        match panels.iter_mut().find(|(t, _)| *t == title) {
            Some((_, list)) => list.push(row),
            None => panels.push((title, vec![row])),
        }
    }
    let columns = 3usize;
    let rows_n = panels.len().div_ceil(columns).max(1);
    let (width, height) = (columns as f64 * PANEL_W, rows_n as f64 * PANEL_H + 30.0);
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="#fff"/><text x="10" y="18" font-size="14">cloudbus bench: operations/s by in-flight level (blue: bus, grey: baseline, light: limit without acks or confirms)</text>"##
    );
    for (i, (title, points)) in panels.iter().enumerate() {
        let (x0, y0) = (
            (i % columns) as f64 * PANEL_W,
            30.0 + (i / columns) as f64 * PANEL_H,
        );
        let max = points
            .iter()
            .flat_map(|r| {
                [
                    r.bus.ops_per_sec,
                    r.baseline.ops_per_sec,
                    r.limit.as_ref().map_or(0.0, |l| l.ops_per_sec),
                ]
            })
            .fold(1.0, f64::max);
        let (plot_w, plot_h) = (PANEL_W - 2.0 * MARGIN, PANEL_H - 2.0 * MARGIN);
        let x = |k: usize| x0 + MARGIN + plot_w * (k as f64 + 0.5) / points.len() as f64;
        let y = |v: f64| y0 + MARGIN + plot_h * (1.0 - v / max);
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="12">{title}</text><line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#999"/><text x="{}" y="{}">{:.0}/s</text>"##,
            x0 + MARGIN,
            y0 + MARGIN - 16.0,
            x0 + MARGIN,
            y0 + MARGIN + plot_h,
            x0 + MARGIN + plot_w,
            y0 + MARGIN + plot_h,
            x0 + 4.0,
            y0 + MARGIN + 4.0,
            max
        );
        let bar = plot_w / points.len() as f64 / 4.0;
        for (k, r) in points.iter().enumerate() {
            let limit = r.limit.as_ref().map(|l| (bar, l.ops_per_sec, "#d5dae0"));
            let bars = [
                (-bar, r.bus.ops_per_sec, "#2f6fde"),
                (0.0, r.baseline.ops_per_sec, "#9aa3ae"),
            ];
            for (offset, value, colour) in bars.into_iter().chain(limit) {
                let _ = write!(
                    out,
                    r##"<rect x="{:.1}" y="{:.1}" width="{bar:.1}" height="{:.1}" fill="{colour}"/>"##,
                    x(k) + offset,
                    y(value),
                    y0 + MARGIN + plot_h - y(value)
                );
            }
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} ({:.2})</text>"##,
                x(k),
                y0 + MARGIN + plot_h + 14.0,
                r.level,
                r.ratio
            );
        }
    }
    out.push_str("</svg>\n");
    out
}
