//! The sweep's picture: an SVG drawn with `plotters` (SVG backend only, no system fonts: the
//! text is SVG `<text>` that the viewer renders).
//!
//! One panel per vCPU count: the speedup of asynchronous over synchronous page faults against
//! the backing-store latency L, one solid line per T, its bound min(T, sync / ref) dashed in the
//! same colour, a grey line at 1.0 (as fast as synchronous) and a red cross on every point where
//! APF was slower than the never-slower rule allows. L runs from 0 to 10 ms, so the x axis is
//! log10(1 + L): 0 stays at the left edge and 20, 100, 1000, 10000 µs are spread out.

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use crate::sweep::{Point, Settings, NEVER_SLOWER_FACTOR};

/// Size of one panel, pixels.
const PANEL: (u32, u32) = (620, 500);
/// Heights of the title and of the footnote lines.
const TITLE_PX: u32 = 36;
const FOOT_PX: u32 = 84;

/// The x position of latency L: log10(1 + L) in thousandths (plotters formats the labels of
/// integer axes with key points, not those of float axes).
pub fn x_of(latency_us: u64) -> i32 {
    ((latency_us as f64 + 1.0).log10() * 1000.0).round() as i32
}

/// The label of x position `x`: the latency of `latencies_us` there, else the latency it
/// stands for, in µs.
pub fn label_of(x: i32, latencies_us: &[u64]) -> String {
    match latencies_us.iter().find(|&&l| x_of(l) == x) {
        Some(l) => l.to_string(),
        None => format!("{:.0}", 10f64.powf(f64::from(x) / 1000.0) - 1.0),
    }
}

/// The top of the y axis: a little above the highest speedup or bound, at least 2.
pub fn y_top(points: &[Point]) -> f64 {
    let top = points.iter().flat_map(|p| [p.speedup, p.speedup_bound]).flatten().fold(2.0, f64::max);
    (top * 1.1).ceil()
}

/// A colour per T (by its index in the sweep's T list).
fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
        RGBColor(188, 189, 34),
    ];
    COLOURS[i % COLOURS.len()]
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

/// The SVG document of the sweep's points.
pub fn svg(points: &[Point], latencies_us: &[u64], vcpus: &[u32], settings: &Settings) -> Result<String> {
    let panels: Vec<u32> = vcpus.iter().copied().filter(|n| points.iter().any(|p| p.vcpus == *n)).collect();
    let width = (PANEL.0 * panels.len() as u32).max(2 * PANEL.0);
    let height = TITLE_PX + PANEL.1 + FOOT_PX;
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (title, rest) = root.split_vertically(TITLE_PX);
        let (body, foot) = rest.split_vertically(PANEL.1);
        title
            .draw_text(
                "asyncpf: speedup of asynchronous over synchronous page faults against the backing-store latency",
                &("sans-serif", 24).into_text_style(&title),
                (12, 10),
            )
            .map_err(err)?;
        let small = ("sans-serif", 16).into_text_style(&foot);
        let foot_lines = [
            settings.command.clone(),
            settings.line(),
            format!("latency model: {}", settings.latency_model),
            format!(
                "solid: speedup = synchronous / asynchronous guest time, per T (tasks per vCPU); dashed: its bound \
                 min(T, sync / ref); red x: APF more than {NEVER_SLOWER_FACTOR:.2}x slower than synchronous"
            ),
        ];
        for (i, line) in foot_lines.iter().enumerate() {
            foot.draw_text(line, &small, (12, 4 + 19 * i as i32)).map_err(err)?;
        }
        let areas = body.split_evenly((1, panels.len().max(1)));
        let y_max = y_top(points);
        let x_max = latencies_us.iter().copied().map(x_of).fold(1000, i32::max) * 104 / 100;
        let mut tasks: Vec<u32> = points.iter().map(|p| p.tasks).collect();
        tasks.sort_unstable();
        tasks.dedup();
        for (area, &n) in areas.iter().zip(&panels) {
            let key_points: Vec<i32> = latencies_us.iter().copied().map(x_of).collect();
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{n} vCPU{}", if n == 1 { "" } else { "s" }), ("sans-serif", 22))
                .margin(12)
                .x_label_area_size(42)
                .y_label_area_size(52)
                .build_cartesian_2d((0i32..x_max).with_key_points(key_points), 0f64..y_max)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("backing-store latency L (µs), log10(1 + L) axis")
                .y_desc("speedup (sync / async)")
                .x_label_formatter(&|x| label_of(*x, latencies_us))
                .y_label_formatter(&|y| format!("{y:.0}x"))
                .x_max_light_lines(0)
                .axis_desc_style(("sans-serif", 16))
                .label_style(("sans-serif", 15))
                .y_max_light_lines(0)
                .draw()
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new([(0, 1.0), (x_max, 1.0)], BLACK.mix(0.5).stroke_width(1)))
                .map_err(err)?
                .label("1.0x: as fast as synchronous")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.5).stroke_width(1)));
            chart
                .draw_series(std::iter::empty::<Circle<(i32, f64), i32>>())
                .map_err(err)?
                .label("dashed: bound min(T, sync / ref)")
                .legend(|(x, y)| {
                    plotters::element::DashedPathElement::new([(x, y), (x + 20, y)], 5, 3, BLACK.stroke_width(1))
                });
            for (i, &t) in tasks.iter().enumerate() {
                let c = colour(i);
                let mut mine: Vec<&Point> = points.iter().filter(|p| p.vcpus == n && p.tasks == t).collect();
                if mine.is_empty() {
                    continue;
                }
                mine.sort_by_key(|p| p.latency_us);
                let speedup: Vec<(i32, f64)> =
                    mine.iter().filter_map(|p| p.speedup.map(|s| (x_of(p.latency_us), s))).collect();
                let bound: Vec<(i32, f64)> =
                    mine.iter().filter_map(|p| p.speedup_bound.map(|b| (x_of(p.latency_us), b))).collect();
                chart
                    .draw_series(LineSeries::new(speedup.clone(), c.stroke_width(2)))
                    .map_err(err)?
                    .label(format!("T = {t}"))
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
                chart.draw_series(speedup.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(err)?;
                chart.draw_series(DashedLineSeries::new(bound, 6, 4, c.stroke_width(1))).map_err(err)?;
                let slower =
                    mine.iter().filter(|p| p.slower).filter_map(|p| p.speedup.map(|s| (x_of(p.latency_us), s)));
                chart.draw_series(slower.map(|p| Cross::new(p, 6, RED.stroke_width(2)))).map_err(err)?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.3))
                .label_font(("sans-serif", 16))
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ish_axis() {
        assert_eq!((x_of(0), x_of(9), x_of(99), x_of(10_000)), (0, 1000, 2000, 4000));
        let ls = [0, 20, 100, 1000, 10_000];
        assert_eq!(ls.map(x_of), [0, 1322, 2004, 3000, 4000]);
        for l in ls {
            assert_eq!(label_of(x_of(l), &ls), l.to_string(), "the sweep's own latencies, exactly");
        }
        assert_eq!(label_of(2000, &ls), "99", "elsewhere: 10^(x/1000) - 1");
    }
}
