//! Pictures for people: SVG drawings of what a job did.
//!
//! [`watermark_svg`] draws event time against input position: one dot per event (grey on time,
//! red late) and the watermark as a blue step line. An event is late exactly when its dot lies on
//! or below the line — which is the picture that makes watermarks click.

use std::fmt::Write as _;

use crate::time::WATERMARK_MIN;

/// One event as the watermark picture shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkPoint {
    /// Position in the input (line number, or arrival index).
    pub position: u64,
    /// The event's time.
    pub time_ms: i64,
    /// The watermark the event arrived behind.
    pub watermark_ms: i64,
    /// Whether the event was late (`time_ms <= watermark_ms`).
    pub late: bool,
}

/// How many on-time dots and watermark vertices a picture draws at most; late events are all
/// drawn (up to the same bound), since they are what the picture is for.
pub const SVG_POINTS_MAX: usize = 4_000;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 540.0;
const MARGIN_LEFT: f64 = 90.0;
const MARGIN_RIGHT: f64 = 20.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 50.0;

/// Draws `points` (in input order) as an SVG document titled `title`.
pub fn watermark_svg(title: &str, points: &[WatermarkPoint]) -> String {
    let mut svg = begin(title);
    if points.is_empty() {
        let _ = writeln!(svg, r#"<text x="{MARGIN_LEFT}" y="{}">no events</text></svg>"#, HEIGHT / 2.0);
        return svg;
    }

    let (x_min, x_max) = (points[0].position, points[points.len() - 1].position.max(points[0].position + 1));
    let watermarks = points.iter().map(|p| p.watermark_ms).filter(|&w| w != WATERMARK_MIN);
    let y_min = points.iter().map(|p| p.time_ms).chain(watermarks.clone()).min().unwrap_or(0);
    let y_max = points.iter().map(|p| p.time_ms).chain(watermarks).max().unwrap_or(1).max(y_min + 1);
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x = |position: u64| MARGIN_LEFT + (position - x_min) as f64 / (x_max - x_min) as f64 * plot_w;
    let y = |time_ms: i64| MARGIN_TOP + plot_h - (time_ms - y_min) as f64 / (y_max - y_min) as f64 * plot_h;

    // Axes, with ticks at the ends and the middle.
    let right = MARGIN_LEFT + plot_w;
    let ticks = [0.0, 0.5, 1.0].map(|fraction| {
        let position = x_min + ((x_max - x_min) as f64 * fraction) as u64;
        let time_ms = y_min + ((y_max - y_min) as f64 * fraction) as i64;
        ((x(position), position.to_string()), (y(time_ms), time_ms.to_string()))
    });
    axes(&mut svg, plot_h, 0.0, &ticks, "input position", "event time (ms)");

    let stride = points.len().div_ceil(SVG_POINTS_MAX).max(1);
    let _ = writeln!(svg, r##"<g fill="#9a9a9a" fill-opacity="0.55">"##);
    for point in points.iter().step_by(stride).filter(|p| !p.late) {
        let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="1.6"/>"#, x(point.position), y(point.time_ms));
    }
    let _ = writeln!(svg, "</g>");

    let mut line = String::new();
    for point in points.iter().step_by(stride).chain(points.last()) {
        if point.watermark_ms == WATERMARK_MIN {
            continue;
        }
        let command = if line.is_empty() { 'M' } else { 'H' };
        let _ = write!(line, "{command}{:.1} ", x(point.position));
        if command == 'M' {
            let _ = write!(line, "{:.1} ", y(point.watermark_ms));
        } else {
            let _ = write!(line, "V{:.1} ", y(point.watermark_ms));
        }
    }
    if !line.is_empty() {
        let _ = writeln!(svg, r##"<path d="{}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>"##, line.trim_end());
    }

    let late: Vec<&WatermarkPoint> = points.iter().filter(|p| p.late).take(SVG_POINTS_MAX).collect();
    let _ = writeln!(svg, r##"<g fill="#d62728">"##);
    for point in &late {
        let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="2.6"/>"#, x(point.position), y(point.time_ms));
    }
    let _ = writeln!(svg, "</g>");

    let legend_x = right - 330.0;
    let _ = writeln!(
        svg,
        r##"<g><circle cx="{legend_x}" cy="{MARGIN_TOP}" r="3" fill="#9a9a9a"/><text x="{}" y="{}">event on time</text><circle cx="{}" cy="{MARGIN_TOP}" r="3" fill="#d62728"/><text x="{}" y="{}">late event ({})</text><path d="M{} {} h20" stroke="#1f5fbf" stroke-width="1.5"/><text x="{}" y="{}">watermark</text></g>"##,
        legend_x + 8.0,
        MARGIN_TOP + 4.0,
        legend_x + 100.0,
        legend_x + 108.0,
        MARGIN_TOP + 4.0,
        points.iter().filter(|p| p.late).count(),
        legend_x + 230.0,
        MARGIN_TOP,
        legend_x + 256.0,
        MARGIN_TOP + 4.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// What happened over a run's (virtual) processing time, for [`timeline_svg`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// When the run ended (ms).
    pub end_ms: i64,
    /// A cumulative count over time: `(ms, total so far)`, in time order.
    pub committed: Vec<(i64, u64)>,
    /// What `committed` counts, e.g. "coupons committed".
    pub committed_label: String,
    /// Checkpoints: `(trigger ms, end ms, completed)`.
    pub checkpoints: Vec<(i64, i64, bool)>,
    /// Crashes (ms).
    pub crashes: Vec<i64>,
}

/// Draws a run's time line: the committed count as a step line, each checkpoint as a bar from its
/// trigger to its end (green: completed, grey: failed), each crash as a red line.
pub fn timeline_svg(title: &str, timeline: &Timeline) -> String {
    let mut svg = begin(title);
    let end_ms = timeline.end_ms.max(1);
    let total = timeline.committed.last().map_or(0, |(_, total)| *total).max(1);
    let plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    // The lower band shows checkpoints; the plot above it the committed count.
    let band_h = 36.0;
    let plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM - band_h;
    let (bottom, right) = (MARGIN_TOP + plot_h, MARGIN_LEFT + plot_w);
    let x = |ms: i64| MARGIN_LEFT + ms.clamp(0, end_ms) as f64 / end_ms as f64 * plot_w;
    let y = |count: u64| MARGIN_TOP + plot_h - count as f64 / total as f64 * plot_h;

    let ticks = [0.0, 0.5, 1.0].map(|fraction| {
        let ms = (end_ms as f64 * fraction) as i64;
        let count = (total as f64 * fraction) as u64;
        ((x(ms), ms.to_string()), (y(count), count.to_string()))
    });
    let x_title = "processing time (ms, virtual in the simulator)";
    axes(&mut svg, plot_h, band_h, &ticks, x_title, &timeline.committed_label);

    let _ = writeln!(svg, r#"<g>"#);
    for &(trigger_ms, end, completed) in &timeline.checkpoints {
        let colour = if completed { "#2ca02c" } else { "#b0b0b0" };
        let _ = writeln!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="14" fill="{colour}" fill-opacity="0.7"/>"#,
            x(trigger_ms),
            bottom + 10.0,
            (x(end) - x(trigger_ms)).max(1.0)
        );
    }
    let _ = writeln!(svg, "</g>");

    let mut line = format!("M{MARGIN_LEFT:.1} {:.1} ", y(0));
    for &(ms, count) in &timeline.committed {
        let _ = write!(line, "H{:.1} V{:.1} ", x(ms), y(count));
    }
    let _ = write!(line, "H{right:.1}");
    let _ = writeln!(svg, r##"<path d="{line}" fill="none" stroke="#1f5fbf" stroke-width="2"/>"##);

    for &crash_ms in &timeline.crashes {
        let _ = writeln!(
            svg,
            r##"<path d="M{:.1} {MARGIN_TOP} V{:.1}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="4 3"/>"##,
            x(crash_ms),
            bottom + band_h
        );
    }

    let legend_x = MARGIN_LEFT + 12.0;
    let _ = writeln!(
        svg,
        r##"<g><path d="M{legend_x} {MARGIN_TOP} h20" stroke="#1f5fbf" stroke-width="2"/><text x="{}" y="{}">{} ({})</text><rect x="{legend_x}" y="{}" width="20" height="10" fill="#2ca02c" fill-opacity="0.7"/><text x="{}" y="{}">checkpoint, trigger to completion ({})</text><path d="M{} {} h20" stroke="#d62728" stroke-width="1.5" stroke-dasharray="4 3"/><text x="{}" y="{}">crash ({})</text></g>"##,
        legend_x + 26.0,
        MARGIN_TOP + 4.0,
        escape(&timeline.committed_label),
        timeline.committed.last().map_or(0, |(_, total)| *total),
        MARGIN_TOP + 12.0,
        legend_x + 26.0,
        MARGIN_TOP + 21.0,
        timeline.checkpoints.iter().filter(|(_, _, completed)| *completed).count(),
        legend_x,
        MARGIN_TOP + 34.0,
        legend_x + 26.0,
        MARGIN_TOP + 38.0,
        timeline.crashes.len()
    );
    svg.push_str("</svg>\n");
    svg
}

/// A drawing of the common size: white, with `title` on top.
fn begin(title: &str) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{MARGIN_LEFT}" y="22" font-size="15">{}</text>"#, escape(title));
    svg
}

/// A tick on each axis: `((x, label), (y, label))`, positions in pixels.
type Tick = ((f64, String), (f64, String));

/// The two axes of a plot `plot_h` high, their tick labels (`((x, label), (y, label))` in
/// pixels) `gap` below the plot, and their titles.
fn axes(svg: &mut String, plot_h: f64, gap: f64, ticks: &[Tick], x_title: &str, y_title: &str) {
    let (bottom, right) = (MARGIN_TOP + plot_h, WIDTH - MARGIN_RIGHT);
    let _ = writeln!(svg, r##"<path d="M{MARGIN_LEFT} {MARGIN_TOP} V{bottom} H{right}" fill="none" stroke="#333"/>"##);
    for ((x, x_label), (y, y_label)) in ticks {
        let _ = writeln!(svg, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{x_label}</text>"#, bottom + gap + 18.0);
        let _ =
            writeln!(svg, r#"<text x="{}" y="{:.1}" text-anchor="end">{y_label}</text>"#, MARGIN_LEFT - 6.0, y + 4.0);
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        (MARGIN_LEFT + right) / 2.0,
        HEIGHT - 10.0,
        escape(x_title)
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        MARGIN_TOP + plot_h / 2.0,
        escape(y_title)
    );
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_events_are_drawn_red_and_the_watermark_as_a_line() {
        let points = [
            WatermarkPoint { position: 1, time_ms: 1_000, watermark_ms: WATERMARK_MIN, late: false },
            WatermarkPoint { position: 2, time_ms: 5_000, watermark_ms: 999, late: false },
            WatermarkPoint { position: 3, time_ms: 500, watermark_ms: 4_999, late: true },
        ];
        let svg = watermark_svg("test <run>", &points);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("test &lt;run&gt;"));
        assert_eq!(svg.matches(r#"r="2.6""#).count(), 1, "one late dot");
        assert!(svg.contains("late event (1)"));
        assert!(svg.contains(r##"stroke="#1f5fbf" stroke-width="1.5"/>"##));
    }
}
