//! The report's two plots, as plain SVG: settle-time percentiles against
//! the offered rate (log scale: a saturated step is seconds, a quiet one
//! milliseconds), and each service's CPU per checkout, stacked, per rate.

use std::fmt::Write as _;

use crate::load::Step;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 45.0;
const COLOURS: &[&str] = &[
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666", "#1f78b4",
];

fn frame(title: &str, x_label: &str, y_label: &str) -> String {
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">{title}</text>
<text x="{}" y="{}" text-anchor="middle">{x_label}</text>
<text x="14" y="{}" text-anchor="middle" transform="rotate(-90 14 {})">{y_label}</text>
"#,
        (LEFT + WIDTH - RIGHT) / 2.0,
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 8.0,
        (TOP + HEIGHT - BOTTOM) / 2.0,
        (TOP + HEIGHT - BOTTOM) / 2.0,
    );
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="#333"/>"##,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        HEIGHT - BOTTOM,
        HEIGHT - BOTTOM
    );
    svg
}

/// x positions of the steps, evenly spaced (rates are steps, not a scale).
fn xs(n: usize) -> Vec<f64> {
    let span = WIDTH - RIGHT - LEFT;
    (0..n)
        .map(|i| LEFT + span * (i as f64 + 0.5) / n.max(1) as f64)
        .collect()
}

fn x_ticks(svg: &mut String, steps: &[Step], xs: &[f64]) {
    for (step, x) in steps.iter().zip(xs) {
        let _ = writeln!(
            svg,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            HEIGHT - BOTTOM + 16.0,
            step.rate
        );
    }
}

fn legend(svg: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + 18.0 * i as f64;
        let colour = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{name}</text>"#,
            WIDTH - RIGHT + 14.0,
            y - 10.0,
            WIDTH - RIGHT + 32.0,
            y
        );
    }
}

/// p50, p90 and p99 of accepted → settled against the offered rate.
pub(crate) fn latency(steps: &[Step]) -> String {
    let mut svg = frame(
        "Checkout accepted → settled",
        "offered checkouts per second",
        "milliseconds (log)",
    );
    let xs = xs(steps.len());
    x_ticks(&mut svg, steps, &xs);
    let quantiles = [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")];
    let highest = steps.iter().map(|s| s.settle.ms_at(0.99)).fold(10.0_f64, f64::max);
    let (low, high) = (1.0_f64.log10(), highest.log10().ceil().max(1.0));
    let y = |ms: f64| {
        let at = (ms.max(1.0).log10() - low) / (high - low);
        HEIGHT - BOTTOM - at * (HEIGHT - BOTTOM - TOP)
    };
    let mut decade: f64 = 1.0;
    while decade.log10() <= high {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{decade}</text>"##,
            y(decade),
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(decade) + 4.0
        );
        decade *= 10.0;
    }
    for (i, (q, _)) in quantiles.iter().enumerate() {
        let points: Vec<String> = steps
            .iter()
            .zip(&xs)
            .map(|(step, x)| format!("{x:.1},{:.1}", y(step.settle.ms_at(*q))))
            .collect();
        let colour = COLOURS[i];
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            points.join(" ")
        );
        for point in &points {
            let (px, py) = point.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(svg, r#"<circle cx="{px}" cy="{py}" r="3" fill="{colour}"/>"#);
        }
    }
    legend(&mut svg, &quantiles.map(|(_, name)| name));
    svg.push_str("</svg>\n");
    svg
}

/// Each service's CPU milliseconds per settled checkout, stacked per rate.
pub(crate) fn cpu(steps: &[Step]) -> String {
    let mut svg = frame(
        "CPU per checkout, by process",
        "offered checkouts per second",
        "CPU ms per checkout",
    );
    let xs = xs(steps.len());
    x_ticks(&mut svg, steps, &xs);
    // Services, then the servers they use.
    let parts = |step: &Step| -> Vec<(&'static str, f64)> {
        step.cpu_ms
            .iter()
            .chain(&step.server_cpu_ms)
            .map(|(name, ms)| (*name, ms.max(0.0)))
            .collect()
    };
    let services: Vec<&str> = steps
        .first()
        .map(|s| parts(s).into_iter().map(|(name, _)| name).collect())
        .unwrap_or_default();
    let highest = steps
        .iter()
        .map(|s| parts(s).iter().map(|(_, ms)| ms).sum::<f64>())
        .fold(1.0_f64, f64::max);
    let scale = (HEIGHT - BOTTOM - TOP) / (highest * 1.1);
    let bar = (WIDTH - RIGHT - LEFT) / steps.len().max(1) as f64 * 0.6;
    for tick in 0..=4 {
        let value = highest * 1.1 * f64::from(tick) / 4.0;
        let y = HEIGHT - BOTTOM - value * scale;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{value:.1}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (step, x) in steps.iter().zip(&xs) {
        let mut base = HEIGHT - BOTTOM;
        let step_parts = parts(step);
        for (i, service) in services.iter().enumerate() {
            let ms = step_parts
                .iter()
                .find(|(name, _)| name == service)
                .map_or(0.0, |(_, ms)| *ms);
            let height = ms * scale;
            base -= height;
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{base:.1}" width="{bar:.1}" height="{height:.1}" fill="{}"/>"#,
                x - bar / 2.0,
                COLOURS[i % COLOURS.len()]
            );
        }
    }
    legend(&mut svg, &services);
    svg.push_str("</svg>\n");
    svg
}
