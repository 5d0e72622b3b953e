//! The SVG plot: one document with two charts, drawn from a [`Report`].
//!
//! 1. One-way throughput against message size, log-log, one line per mechanism (a marker per
//!    measured size; a size whose row failed or does not apply leaves a gap).
//! 2. Round-trip latency: one panel per latency mode ("receiver awake", "receiver asleep",
//!    "both on one core"), a horizontal bar per mechanism at its median, on a log axis shared
//!    by the three panels so they compare at a glance.
//!
//! Every mechanism keeps one colour in both charts, picked from a fixed palette by a hash of
//! its id. Text is written as SVG `<text>` elements (no font files are needed); the entries of
//! the throughput legend carry `class="legend"`, which [`legend_labels`] reads back.

use std::collections::HashMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::model::{Bench, LatencyMode, Report, Status};

/// Width of the document in pixels.
const WIDTH: u32 = 1000;
/// Height of the title block.
const TITLE_H: u32 = 70;
/// Height of the throughput chart.
const THROUGHPUT_H: u32 = 640;
/// Height of the heading above the latency panels.
const LATENCY_HEADING_H: u32 = 36;
/// Vertical pixels per bar in a latency panel.
const BAR_PITCH: u32 = 20;
/// Height of a latency panel besides its bars (caption and axis).
const PANEL_EXTRA_H: u32 = 78;
/// Height of a section that only holds a message.
const MESSAGE_H: u32 = 120;
/// Font family given to legend entries while drawing, replaced afterwards by a real family and
/// `class="legend"` (the SVG backend has no way to add attributes).
const LEGEND_FAMILY: &str = "multiproc-bench-legend";
/// The class the legend entries carry in the finished document.
const LEGEND_CLASS: &str = "legend";

/// The fixed palette: 14 colours that stay apart on white.
const PALETTE: [RGBColor; 14] = [
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
    RGBColor(57, 59, 121),
    RGBColor(0, 0, 0),
    RGBColor(152, 223, 138),
    RGBColor(255, 187, 120),
];

const TEXT: RGBColor = RGBColor(30, 30, 30);
const MUTED: RGBColor = RGBColor(110, 110, 110);

/// Renders the report as one SVG document.
///
/// A report without throughput or latency figures still renders: the section in question
/// says there is nothing to plot. `Err` only reports a drawing failure.
pub fn render_svg(report: &Report) -> Result<String, String> {
    let colours = Colours::new(report);
    let throughput = ThroughputData::new(report);
    let latency = LatencyData::new(report);

    let throughput_h = if throughput.series.is_empty() {
        MESSAGE_H
    } else {
        THROUGHPUT_H
    };
    let latency_h = LATENCY_HEADING_H
        + if latency.panels.is_empty() {
            MESSAGE_H
        } else {
            latency.panels.len() as u32 * latency.panel_height()
        };
    let height = TITLE_H + throughput_h + latency_h + 10;

    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let (title_area, rest) = root.split_vertically(TITLE_H);
        let (throughput_area, latency_area) = rest.split_vertically(throughput_h);
        draw_title(&title_area, report)?;
        draw_throughput(&throughput_area, &throughput, &colours)?;
        draw_latency(&latency_area, &latency, &colours)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(buf.replace(
        &format!("font-family=\"{LEGEND_FAMILY}\""),
        &format!("font-family=\"sans-serif\" class=\"{LEGEND_CLASS}\""),
    ))
}

/// Writes render_svg's output to `path`.
pub fn write_svg(report: &Report, path: &Path) -> Result<(), String> {
    let svg = render_svg(report)?;
    std::fs::write(path, svg).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The labels of the series the SVG's legends name (parsed back from an SVG document), for checking.
///
/// These are the `<text class="legend">` elements [`render_svg`] writes for the throughput
/// chart's legend, in order, with surrounding white space trimmed and XML entities decoded.
/// (The latency panels name their bars on the axis instead.)
pub fn legend_labels(svg: &str) -> Result<Vec<String>, String> {
    if !svg.contains("<svg") {
        return Err("not an SVG document: no <svg> element".into());
    }
    let class_attr = format!(" class=\"{LEGEND_CLASS}\"");
    let mut labels = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find("<text") {
        let element = &rest[start..];
        let after_name = element[5..].chars().next();
        if !matches!(after_name, Some(c) if c.is_whitespace() || c == '>' || c == '/') {
            // Some other element whose name starts with "text".
            rest = &element[5..];
            continue;
        }
        let tag_end = element
            .find('>')
            .ok_or_else(|| "unterminated <text> tag".to_string())?;
        let tag = &element[..tag_end];
        if tag.ends_with('/') {
            rest = &element[tag_end + 1..];
            continue;
        }
        let body = &element[tag_end + 1..];
        let body_end = body
            .find("</text>")
            .ok_or_else(|| "<text> element without </text>".to_string())?;
        if tag.contains(&class_attr) {
            labels.push(unescape_xml(body[..body_end].trim())?);
        }
        rest = &body[body_end + "</text>".len()..];
    }
    Ok(labels)
}

/// Decodes the five predefined XML entities and numeric character references.
fn unescape_xml(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let entity = &rest[amp..];
        let end = entity
            .find(';')
            .ok_or_else(|| format!("unterminated entity in {text:?}"))?;
        let name = &entity[1..end];
        let decoded = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = name.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("unknown entity &{name}; in {text:?}"))?
            }
        };
        out.push(decoded);
        rest = &entity[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn drawing_error(e: impl std::fmt::Display) -> String {
    format!("drawing the plot: {e}")
}

/// The colour of each mechanism id in the report: the palette slot its id hashes to, or the
/// next free slot when an earlier mechanism already took it (so no two mechanisms of one report
/// share a colour while the palette lasts).
struct Colours {
    by_id: HashMap<String, RGBColor>,
}

impl Colours {
    fn new(report: &Report) -> Self {
        let mut by_id = HashMap::new();
        let mut taken = [false; PALETTE.len()];
        // Only the plotted groups: the lock and pairs groups are not drawn, and their mutexes
        // would take colours from the palette.
        let plotted = report
            .groups
            .iter()
            .filter(|g| matches!(g.bench, Bench::Latency { .. } | Bench::Throughput { .. }));
        for row in plotted.flat_map(|g| &g.rows) {
            if by_id.contains_key(&row.mechanism) {
                continue;
            }
            let preferred = (fnv1a(row.mechanism.as_bytes()) % PALETTE.len() as u64) as usize;
            let slot = (0..PALETTE.len())
                .map(|k| (preferred + k) % PALETTE.len())
                .find(|&s| !taken[s])
                .unwrap_or(preferred);
            taken[slot] = true;
            by_id.insert(row.mechanism.clone(), PALETTE[slot]);
        }
        Colours { by_id }
    }

    fn of(&self, mechanism: &str) -> RGBColor {
        self.by_id
            .get(mechanism)
            .copied()
            .unwrap_or(PALETTE[(fnv1a(mechanism.as_bytes()) % PALETTE.len() as u64) as usize])
    }
}

/// 64-bit FNV-1a: stable across runs and platforms, unlike the std hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A figure that can go on a log axis.
fn plottable(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite() && *v > 0.0)
}

/// One mechanism's line in the throughput chart.
struct Series {
    mechanism: String,
    label: String,
    /// Runs of consecutive measured sizes, as (size, bytes/s); a gap separates runs.
    runs: Vec<Vec<(f64, f64)>>,
}

struct ThroughputData {
    /// Every throughput size of the report, ascending (those without figures too).
    sizes: Vec<u64>,
    /// Mechanisms with at least one figure, in the order they first appear.
    series: Vec<Series>,
}

impl ThroughputData {
    fn new(report: &Report) -> Self {
        let groups: Vec<(u64, &crate::model::Group)> = report
            .groups
            .iter()
            .filter_map(|g| match g.bench {
                Bench::Throughput { size } if size > 0 => Some((size, g)),
                _ => None,
            })
            .collect();
        let mut sizes: Vec<u64> = groups.iter().map(|(s, _)| *s).collect();
        sizes.sort_unstable();
        sizes.dedup();

        let mut mechanisms: Vec<(&str, &str)> = Vec::new();
        for row in groups.iter().flat_map(|(_, g)| &g.rows) {
            if !mechanisms.iter().any(|(id, _)| *id == row.mechanism) {
                mechanisms.push((&row.mechanism, &row.label));
            }
        }

        let mut series = Vec::new();
        for (id, label) in mechanisms {
            let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
            let mut run = Vec::new();
            for &size in &sizes {
                let figure = groups
                    .iter()
                    .filter(|(s, _)| *s == size)
                    .flat_map(|(_, g)| g.rows.iter().filter(|r| r.mechanism == id))
                    .find_map(|r| {
                        (r.status == Status::Ok)
                            .then_some(r.bytes_per_s)
                            .and_then(plottable)
                    });
                match figure {
                    Some(bps) => run.push((size as f64, bps)),
                    None if !run.is_empty() => runs.push(std::mem::take(&mut run)),
                    None => {}
                }
            }
            if !run.is_empty() {
                runs.push(run);
            }
            if !runs.is_empty() {
                series.push(Series {
                    mechanism: id.to_string(),
                    label: label.to_string(),
                    runs,
                });
            }
        }
        ThroughputData { sizes, series }
    }
}

/// One latency mode's panel.
struct Panel {
    title: &'static str,
    /// (mechanism, label, median ns or why there is none), one per mechanism of any latency
    /// group, in the same order in every panel.
    bars: Vec<(String, String, Result<f64, &'static str>)>,
}

struct LatencyData {
    panels: Vec<Panel>,
    /// The shared axis range in ns.
    range: (f64, f64),
}

impl LatencyData {
    fn new(report: &Report) -> Self {
        let groups: Vec<(LatencyMode, &crate::model::Group)> = report
            .groups
            .iter()
            .filter_map(|g| match g.bench {
                Bench::Latency { mode } => Some((mode, g)),
                _ => None,
            })
            .collect();
        let mut mechanisms: Vec<(&str, &str)> = Vec::new();
        for row in groups.iter().flat_map(|(_, g)| &g.rows) {
            if !mechanisms.iter().any(|(id, _)| *id == row.mechanism) {
                mechanisms.push((&row.mechanism, &row.label));
            }
        }

        let modes = [
            (LatencyMode::Awake, "receiver awake"),
            (LatencyMode::Asleep, "receiver asleep"),
            (LatencyMode::OneCore, "both on one core"),
        ];
        let mut panels = Vec::new();
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (mode, title) in modes {
            let in_mode: Vec<&crate::model::Group> = groups
                .iter()
                .filter(|(m, _)| *m == mode)
                .map(|(_, g)| *g)
                .collect();
            if in_mode.is_empty() {
                continue;
            }
            let bars = mechanisms
                .iter()
                .map(|&(id, label)| {
                    let row = in_mode
                        .iter()
                        .flat_map(|g| g.rows.iter().filter(|r| r.mechanism == id))
                        .next();
                    let figure = match row {
                        None => Err("not measured"),
                        Some(r) => match r.status {
                            Status::Ok => plottable(r.median_ns).ok_or("no figure"),
                            Status::Failed => Err("failed"),
                            Status::NotApplicable => Err("not applicable"),
                        },
                    };
                    if let Ok(ns) = figure {
                        lo = lo.min(ns);
                        hi = hi.max(ns);
                    }
                    (id.to_string(), label.to_string(), figure)
                })
                .collect();
            panels.push(Panel { title, bars });
        }
        let range = if lo <= hi {
            nice_range(lo, hi)
        } else {
            (100.0, 100_000.0)
        };
        LatencyData { panels, range }
    }

    fn bar_count(&self) -> usize {
        self.panels.first().map_or(0, |p| p.bars.len())
    }

    fn panel_height(&self) -> u32 {
        self.bar_count().max(1) as u32 * BAR_PITCH + PANEL_EXTRA_H
    }
}

/// The vertical axis of a latency panel: `n` bands of height 1 from 0 up, one per bar, a tick
/// (the bar's label) at the middle of each.
struct Bands(usize);

impl Ranged for Bands {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let n = self.0.max(1) as f64;
        limit.0 + (f64::from(limit.1 - limit.0) * value / n).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.0).map(|i| i as f64 + 0.5).collect()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.0.max(1) as f64
    }
}

/// A log axis range around `lo..=hi` (both > 0) with a little room at both ends, its bounds on
/// the 1-2-5 sequence (so the axis starts and ends on a round figure).
fn nice_range(lo: f64, hi: f64) -> (f64, f64) {
    let lo = lo / 1.15;
    let hi = hi * 1.15;
    let decade = 10f64.powf(lo.log10().floor());
    let a = [5.0, 2.0, 1.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|v| *v <= lo)
        .unwrap_or(decade);
    let decade = 10f64.powf(hi.log10().floor());
    let b = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * decade)
        .find(|v| *v >= hi)
        .unwrap_or(decade * 10.0);
    (a, b)
}

/// Tick values on a decimal log axis: every decade, plus 2 and 5 when the axis is at most two
/// decades wide. Also the light grid (2..9 of each decade).
fn decade_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let first = lo.log10().floor() as i32;
    let last = hi.log10().ceil() as i32;
    let multipliers: &[f64] = if last - first <= 2 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let within = |v: &f64| *v >= lo * 0.999 && *v <= hi * 1.001;
    let mut bold = Vec::new();
    let mut light = Vec::new();
    for e in first..=last {
        let decade = 10f64.powi(e);
        bold.extend(multipliers.iter().map(|m| m * decade).filter(within));
        light.extend((2..10).map(|m| f64::from(m) * decade).filter(within));
    }
    (bold, light)
}

/// Tick values on a binary log axis: powers of two, every `stride`-th exponent so that at most
/// nine are labelled. Also the light grid (every power of two).
fn binary_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let first = lo.log2().ceil() as i32;
    let last = hi.log2().floor() as i32;
    let light: Vec<f64> = (first..=last).map(|e| 2f64.powi(e)).collect();
    let stride = [1, 2, 3, 5, 10, 20]
        .into_iter()
        .find(|s| (first..=last).filter(|e| e % s == 0).count() <= 9)
        .unwrap_or(20);
    let bold = (first..=last)
        .filter(|e| e % stride == 0)
        .map(|e| 2f64.powi(e))
        .collect();
    (bold, light)
}

/// `v` with at most three significant digits and no trailing zeros.
fn short_number(v: f64) -> String {
    let text = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// A size in bytes with binary units: "8 B", "4 KiB", "16 MiB".
fn format_size(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < units.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", short_number(v), units[unit])
}

/// A rate in bytes per second with decimal units: "500 MB/s", "1 GB/s".
fn format_rate(bytes_per_s: f64) -> String {
    let units = ["B/s", "kB/s", "MB/s", "GB/s", "TB/s"];
    let mut v = bytes_per_s;
    let mut unit = 0;
    while v >= 999.5 && unit + 1 < units.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{} {}", short_number(v), units[unit])
}

/// A duration in nanoseconds: "250 ns", "1.2 µs", "3 ms".
fn format_ns(ns: f64) -> String {
    let units = ["ns", "µs", "ms", "s"];
    let mut v = ns;
    let mut unit = 0;
    while v >= 999.5 && unit + 1 < units.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{} {}", short_number(v), units[unit])
}

fn text_style<'a>(family: &'a str, size: u32, colour: &'a RGBColor, pos: Pos) -> TextStyle<'a> {
    TextStyle::from((family, size)).color(colour).pos(pos)
}

fn draw_title(area: &DrawingArea<SVGBackend, Shift>, report: &Report) -> Result<(), String> {
    let tool = if report.tool.trim().is_empty() {
        "multiproc-bench"
    } else {
        report.tool.trim()
    };
    let m = &report.machine;
    let mut machine = format!(
        "{}, {} CPUs, Linux {}",
        if m.cpu_model.trim().is_empty() {
            "unknown CPU"
        } else {
            m.cpu_model.trim()
        },
        m.logical_cpus,
        m.kernel.trim()
    );
    if !m.os.trim().is_empty() {
        machine.push_str(&format!(" ({})", m.os.trim()));
    }
    if let Some([a, b]) = m.pinned {
        machine.push_str(&format!(", pinned to CPUs {a} and {b}"));
    }
    let centre = Pos::new(HPos::Center, VPos::Center);
    let x = WIDTH as i32 / 2;
    area.draw(&Text::new(
        format!("IPC mechanisms compared: {tool}"),
        (x, 24),
        text_style("sans-serif", 24, &TEXT, centre),
    ))
    .map_err(drawing_error)?;
    area.draw(&Text::new(
        machine,
        (x, 52),
        text_style("sans-serif", 16, &MUTED, centre),
    ))
    .map_err(drawing_error)?;
    Ok(())
}

/// Draws `message` in the middle of `area`, under `heading`.
fn draw_message(
    area: &DrawingArea<SVGBackend, Shift>,
    heading: &str,
    message: &str,
) -> Result<(), String> {
    let centre = Pos::new(HPos::Center, VPos::Center);
    let (w, h) = area.dim_in_pixel();
    let x = w as i32 / 2;
    area.draw(&Text::new(
        heading.to_string(),
        (x, 20),
        text_style("sans-serif", 20, &TEXT, centre),
    ))
    .map_err(drawing_error)?;
    area.draw(&Text::new(
        message.to_string(),
        (x, (h as i32 / 2).max(50)),
        text_style("sans-serif", 16, &MUTED, centre),
    ))
    .map_err(drawing_error)?;
    Ok(())
}

/// Rough width in pixels of `text` at `size` (the SVG carries no font metrics).
fn text_width(text: &str, size: u32) -> u32 {
    (text.chars().count() as f64 * f64::from(size) * 0.58).ceil() as u32
}

fn draw_throughput(
    area: &DrawingArea<SVGBackend, Shift>,
    data: &ThroughputData,
    colours: &Colours,
) -> Result<(), String> {
    const HEADING: &str = "One-way throughput by message size (median; higher is better)";
    if data.series.is_empty() {
        let message = if data.sizes.is_empty() {
            "no throughput groups in this report"
        } else {
            "no throughput figures: every measurement failed or does not apply"
        };
        return draw_message(area, HEADING, message);
    }

    let legend_w = data
        .series
        .iter()
        .map(|s| text_width(&s.label, 14) + 60)
        .max()
        .unwrap_or(0)
        .clamp(180, 380);
    let (chart_area, legend_area) = area.split_horizontally(WIDTH - legend_w);

    let x_lo = *data.sizes.first().unwrap_or(&1) as f64 / 1.5;
    let x_hi = *data.sizes.last().unwrap_or(&1) as f64 * 1.5;
    let (y_min, y_max) = data
        .series
        .iter()
        .flat_map(|s| s.runs.iter().flatten())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, y)| {
            (lo.min(y), hi.max(y))
        });
    let (y_lo, y_hi) = nice_range(y_min, y_max);
    let (x_bold, x_light) = binary_ticks(x_lo, x_hi);
    let (y_bold, y_light) = decade_ticks(y_lo, y_hi);

    let mut chart = ChartBuilder::on(&chart_area)
        .caption(HEADING, ("sans-serif", 20))
        .margin_left(10)
        .margin_right(20)
        .margin_top(6)
        .margin_bottom(6)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (x_lo..x_hi)
                .log_scale()
                .with_key_points(x_bold)
                .with_light_points(x_light),
            (y_lo..y_hi)
                .log_scale()
                .with_key_points(y_bold)
                .with_light_points(y_light),
        )
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .x_desc("message size")
        .y_desc("payload bytes per second")
        .x_label_formatter(&|v| format_size(*v))
        .y_label_formatter(&|v| format_rate(*v))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(200, 200, 200))
        .draw()
        .map_err(drawing_error)?;

    for series in &data.series {
        let colour = colours.of(&series.mechanism);
        for run in &series.runs {
            if run.len() > 1 {
                chart
                    .draw_series(LineSeries::new(run.iter().copied(), colour.stroke_width(2)))
                    .map_err(drawing_error)?;
            }
            chart
                .draw_series(run.iter().map(|&p| Circle::new(p, 4, colour.filled())))
                .map_err(drawing_error)?;
        }
    }

    // The legend, beside the chart: a line and marker in the series' colour, then its label.
    let (_, legend_h) = legend_area.dim_in_pixel();
    let top = 50i32;
    let pitch = ((legend_h as i32 - top - 20) / data.series.len().max(1) as i32).clamp(8, 22);
    let left = Pos::new(HPos::Left, VPos::Center);
    legend_area
        .draw(&Text::new(
            "mechanism".to_string(),
            (8, top - 18),
            text_style("sans-serif", 14, &MUTED, left),
        ))
        .map_err(drawing_error)?;
    for (i, series) in data.series.iter().enumerate() {
        let colour = colours.of(&series.mechanism);
        let y = top + i as i32 * pitch;
        legend_area
            .draw(&PathElement::new(
                vec![(8, y), (34, y)],
                colour.stroke_width(2),
            ))
            .map_err(drawing_error)?;
        legend_area
            .draw(&Circle::new((21, y), 4, colour.filled()))
            .map_err(drawing_error)?;
        legend_area
            .draw(&Text::new(
                series.label.clone(),
                (42, y),
                text_style(LEGEND_FAMILY, 14, &TEXT, left),
            ))
            .map_err(drawing_error)?;
    }
    Ok(())
}

fn draw_latency(
    area: &DrawingArea<SVGBackend, Shift>,
    data: &LatencyData,
    colours: &Colours,
) -> Result<(), String> {
    const HEADING: &str =
        "Round-trip latency of an 8-byte message (median; log scale; shorter is better)";
    if data.panels.is_empty() {
        return draw_message(area, HEADING, "no latency groups in this report");
    }
    let (heading_area, panels_area) = area.split_vertically(LATENCY_HEADING_H);
    heading_area
        .draw(&Text::new(
            HEADING.to_string(),
            (WIDTH as i32 / 2, LATENCY_HEADING_H as i32 / 2),
            text_style(
                "sans-serif",
                20,
                &TEXT,
                Pos::new(HPos::Center, VPos::Center),
            ),
        ))
        .map_err(drawing_error)?;

    let n = data.bar_count();
    let label_w = data
        .panels
        .iter()
        .flat_map(|p| &p.bars)
        .map(|(_, label, _)| text_width(label, 13) + 16)
        .max()
        .unwrap_or(0)
        .clamp(100, 420);
    let (lo, hi) = data.range;
    let (x_bold, x_light) = decade_ticks(lo, hi);
    // Bar i (in report order) sits at the i-th band from the top.
    let band_of = |i: usize| (n - 1 - i) as f64;

    let panel_areas = panels_area.split_evenly((data.panels.len(), 1));
    for (panel, panel_area) in data.panels.iter().zip(&panel_areas) {
        let labels: Vec<&str> = panel.bars.iter().map(|(_, l, _)| l.as_str()).collect();
        let mut chart = ChartBuilder::on(panel_area)
            .caption(panel.title, ("sans-serif", 16))
            .margin_left(10)
            .margin_right(80)
            .margin_top(4)
            .margin_bottom(4)
            .x_label_area_size(28)
            .y_label_area_size(label_w)
            .build_cartesian_2d(
                (lo..hi)
                    .log_scale()
                    .with_key_points(x_bold.clone())
                    .with_light_points(x_light.clone()),
                Bands(n),
            )
            .map_err(drawing_error)?;
        let y_label = |v: &f64| {
            let band = v.floor();
            if band < 0.0 || band >= n as f64 {
                return String::new();
            }
            labels
                .get(n - 1 - band as usize)
                .map(|l| l.to_string())
                .unwrap_or_default()
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_label_formatter(&|v| format_ns(*v))
            .y_label_formatter(&y_label)
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(drawing_error)?;

        for (i, (mechanism, _, figure)) in panel.bars.iter().enumerate() {
            let band = band_of(i);
            let centre = band + 0.5;
            match figure {
                Ok(ns) => {
                    let colour = colours.of(mechanism);
                    chart
                        .draw_series(std::iter::once(Rectangle::new(
                            [(lo, band + 0.15), (*ns, band + 0.85)],
                            colour.filled(),
                        )))
                        .map_err(drawing_error)?;
                    chart
                        .draw_series(std::iter::once(
                            EmptyElement::at((*ns, centre))
                                + Text::new(
                                    format_ns(*ns),
                                    (5, 0),
                                    text_style(
                                        "sans-serif",
                                        12,
                                        &TEXT,
                                        Pos::new(HPos::Left, VPos::Center),
                                    ),
                                ),
                        ))
                        .map_err(drawing_error)?;
                }
                Err(why) => {
                    chart
                        .draw_series(std::iter::once(
                            EmptyElement::at((lo, centre))
                                + Text::new(
                                    why.to_string(),
                                    (5, 0),
                                    text_style(
                                        "sans-serif",
                                        12,
                                        &MUTED,
                                        Pos::new(HPos::Left, VPos::Center),
                                    ),
                                ),
                        ))
                        .map_err(drawing_error)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(format_size(8.0), "8 B");
        assert_eq!(format_size(1024.0), "1 KiB");
        assert_eq!(format_size(16.0 * 1024.0 * 1024.0), "16 MiB");
        assert_eq!(format_rate(1e9), "1 GB/s");
        assert_eq!(format_rate(2.5e8), "250 MB/s");
        assert_eq!(format_ns(100.0), "100 ns");
        assert_eq!(format_ns(1500.0), "1.5 µs");
    }

    #[test]
    fn size_ticks() {
        let (bold, _) = binary_ticks(8.0 / 1.5, 16.0 * 1024.0 * 1024.0 * 1.5);
        let labels: Vec<String> = bold.iter().map(|v| format_size(*v)).collect();
        assert_eq!(
            labels,
            [
                "8 B", "64 B", "512 B", "4 KiB", "32 KiB", "256 KiB", "2 MiB", "16 MiB"
            ]
        );
    }

    #[test]
    fn unescape() {
        assert_eq!(
            unescape_xml("a &amp; b &lt;c&gt; &#233;").unwrap(),
            "a & b <c> é"
        );
        assert!(unescape_xml("a & b").is_err());
    }
}
