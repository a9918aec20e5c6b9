//! Drawing runs' series into one PNG of four panels.

use super::{PlotError, RunMetrics};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

/// Width of the image in pixels.
pub const WIDTH: u32 = 1600;
/// Height of the image in pixels.
pub const HEIGHT: u32 = 1000;

/// Line colours of the runs, in order (matplotlib's "tab10"); an eleventh run reuses the
/// first colour.
const COLOURS: [RGBColor; 10] = [
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

/// The font family plotters is given; [`register_font`] maps it to the embedded DejaVu Sans.
const FONT: &str = "sans-serif";

/// Draws `runs` into the PNG `out` (written when drawn; its directory must exist): train and
/// validation loss against step and against tokens seen, the learning rate and tokens/s
/// against step, one colour per run, each panel with a legend of the run names.
pub fn draw_runs(runs: &[RunMetrics], out: &Path) -> Result<(), PlotError> {
    if out.extension().and_then(|e| e.to_str()) != Some("png") {
        return Err(PlotError::NotPng {
            path: out.to_path_buf(),
        });
    }
    let failed = |detail: String| PlotError::Draw {
        path: out.to_path_buf(),
        detail,
    };
    register_font().map_err(failed)?;
    let root = BitMapBackend::new(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
    let areas = root.margin(8, 8, 8, 8).split_evenly((2, 2));
    for (area, panel) in areas.iter().zip(panels(runs)) {
        panel.draw(area).map_err(failed)?;
    }
    root.present().map_err(|e| failed(e.to_string()))
}

/// Makes the embedded DejaVu Sans the font of [`FONT`] (once per process).
fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    match ok {
        true => Ok(()),
        false => Err("the embedded DejaVu Sans font could not be parsed".into()),
    }
}

/// Whether a curve is a run's train series (solid) or validation series (dashed, marked).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Train,
    Validation,
}

/// One line of a panel.
struct Curve {
    label: String,
    colour: RGBColor,
    kind: Kind,
    points: Vec<(f64, f64)>,
}

/// One chart of the image.
struct Panel {
    caption: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    /// The y axis starts at 0 (rates), else at the smallest value (losses).
    y_from_zero: bool,
    y_format: fn(f64) -> String,
    legend: SeriesLabelPosition,
    curves: Vec<Curve>,
}

/// The four panels of `runs`.
fn panels(runs: &[RunMetrics]) -> [Panel; 4] {
    let colour = |i: usize| COLOURS[i % COLOURS.len()];
    let loss_curves = |x: fn(f64, u64) -> f64| {
        let mut curves = Vec::new();
        for (i, run) in runs.iter().enumerate() {
            curves.push(Curve {
                label: format!("{} train", run.name),
                colour: colour(i),
                kind: Kind::Train,
                points: run
                    .train
                    .iter()
                    .map(|p| (x(p.tokens_seen, p.step), p.loss))
                    .collect(),
            });
            if !run.eval.is_empty() {
                curves.push(Curve {
                    label: format!("{} validation", run.name),
                    colour: colour(i),
                    kind: Kind::Validation,
                    points: run
                        .eval
                        .iter()
                        .map(|p| (x(p.tokens_seen, p.step), p.val_loss))
                        .collect(),
                });
            }
        }
        curves
    };
    let step_curves = |y: fn(&super::TrainPoint) -> f64| {
        let curves = runs.iter().enumerate().map(|(i, run)| Curve {
            label: run.name.clone(),
            colour: colour(i),
            kind: Kind::Train,
            points: run.train.iter().map(|p| (p.step as f64, y(p))).collect(),
        });
        curves.collect()
    };
    [
        Panel {
            caption: "loss against step",
            x_desc: "step",
            y_desc: "loss",
            y_from_zero: false,
            y_format: format_value,
            legend: SeriesLabelPosition::UpperRight,
            curves: loss_curves(|_, step| step as f64),
        },
        Panel {
            caption: "loss against tokens seen",
            x_desc: "tokens seen (counted in the loss)",
            y_desc: "loss",
            y_from_zero: false,
            y_format: format_value,
            legend: SeriesLabelPosition::UpperRight,
            curves: loss_curves(|tokens, _| tokens),
        },
        Panel {
            caption: "learning rate",
            x_desc: "step",
            y_desc: "learning rate",
            y_from_zero: true,
            y_format: format_rate,
            legend: SeriesLabelPosition::LowerRight,
            curves: step_curves(|p| p.lr),
        },
        Panel {
            caption: "throughput",
            x_desc: "step",
            y_desc: "tokens/s",
            y_from_zero: true,
            y_format: format_count,
            legend: SeriesLabelPosition::LowerRight,
            curves: step_curves(|p| p.tokens_per_second),
        },
    ]
}

impl Panel {
    fn draw(&self, area: &DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), String> {
        let finite = |f: fn(&(f64, f64)) -> f64| {
            self.curves
                .iter()
                .flat_map(|c| c.points.iter().map(f))
                .filter(|v| v.is_finite())
                .collect::<Vec<_>>()
        };
        let x_range = axis_range(&finite(|p| p.0), true);
        let y_range = axis_range(&finite(|p| p.1), self.y_from_zero);
        let mut chart = ChartBuilder::on(area)
            .caption(self.caption, (FONT, 22))
            .margin(10)
            .x_label_area_size(45)
            .y_label_area_size(75)
            .build_cartesian_2d(x_range, y_range)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc(self.y_desc)
            .x_label_formatter(&|v| format_count(*v))
            .y_label_formatter(&|v| (self.y_format)(*v))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(243, 243, 243))
            .draw()
            .map_err(|e| e.to_string())?;
        // Validation curves go over every run's (noisier) train curve, which is faded beside
        // them.
        let validated = self.curves.iter().any(|c| c.kind == Kind::Validation);
        for kind in [Kind::Train, Kind::Validation] {
            for curve in self.curves.iter().filter(|c| c.kind == kind) {
                draw_curve(&mut chart, curve, validated)?;
            }
        }
        chart
            .configure_series_labels()
            .position(self.legend.clone())
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()
            .map_err(|e| e.to_string())
    }
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Draws one curve (split where a value is not finite; a train curve `faded` to 60%) and
/// gives it its legend entry.
fn draw_curve<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    curve: &Curve,
    faded: bool,
) -> Result<(), String> {
    let failed = |e: DrawingAreaErrorKind<_>| e.to_string();
    let colour = curve.colour;
    let line = colour.stroke_width(2);
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let segments = curve
        .points
        .split(|p| !(p.0.is_finite() && p.1.is_finite()))
        .filter(|s| !s.is_empty());
    match curve.kind {
        Kind::Train => {
            let line = match faded {
                true => colour.mix(0.6).stroke_width(2),
                false => line,
            };
            for segment in segments {
                chart
                    .draw_series(LineSeries::new(segment.iter().copied(), line))
                    .map_err(failed)?;
            }
            // A run of a few logged steps also shows its points (a lone one has no line).
            let few = curve.points.len() <= 40;
            let marks = curve.points.iter().filter(finite).filter(|_| few);
            chart
                .draw_series(marks.map(|&p| Circle::new(p, 3, colour.filled())))
                .map_err(failed)?
                .label(&curve.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
        }
        Kind::Validation => {
            for segment in segments {
                let dashes = DashedLineSeries::new(segment.iter().copied(), 8, 5, line);
                chart.draw_series(dashes).map_err(failed)?;
            }
            let marks = curve.points.iter().filter(finite);
            chart
                .draw_series(marks.map(|&p| Circle::new(p, 5, colour.filled())))
                .map_err(failed)?
                .label(&curve.label)
                .legend(move |(x, y)| {
                    // Parts of a composed element are placed relative to its anchor.
                    EmptyElement::at((x, y))
                        + DashedPathElement::new(vec![(0, 0), (24, 0)], 6, 4, line)
                        + Circle::new((12, 0), 4, colour.filled())
                });
        }
    }
    Ok(())
}

/// An axis range holding `values` with a margin; from 0 where `from_zero` (and the values
/// are not negative).
fn axis_range(values: &[f64], from_zero: bool) -> Range<f64> {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !min.is_finite() {
        return 0.0..1.0;
    }
    let low = if from_zero { min.min(0.0) } else { min };
    let span = max - low;
    let pad = if span > 0.0 {
        span * 0.05
    } else {
        (max.abs() * 0.05).max(1e-9)
    };
    let low = if from_zero && low == 0.0 {
        0.0
    } else {
        low - pad
    };
    low..max + pad
}

/// A count for an axis: 950, 12k, 1.5M, 2B.
fn format_count(v: f64) -> String {
    let a = v.abs();
    let (scaled, unit) = match a {
        a if a >= 1e9 => (v / 1e9, "B"),
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (v, ""),
    };
    format!("{}{unit}", trim(format!("{scaled:.2}")))
}

/// A loss for an axis: 3.25, 10, 0.005.
fn format_value(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.01 {
        format!("{v:.1e}")
    } else {
        trim(format!("{v:.3}"))
    }
}

/// A learning rate for an axis: 3e-4, 1.5e-3.
fn format_rate(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let text = format!("{v:.2e}");
    match text.split_once('e') {
        Some((mantissa, exponent)) => format!("{}e{exponent}", trim(mantissa.to_string())),
        None => text,
    }
}

/// Drops trailing zeros after a decimal point (and the point).
fn trim(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(format_count(0.0), "0");
        assert_eq!(format_count(950.0), "950");
        assert_eq!(format_count(5000.0), "5k");
        assert_eq!(format_count(12_500.0), "12.5k");
        assert_eq!(format_count(1_500_000.0), "1.5M");
        assert_eq!(format_count(2e9), "2B");
        assert_eq!(format_value(3.25), "3.25");
        assert_eq!(format_value(10.0), "10");
        assert_eq!(format_value(0.005), "5.0e-3");
        assert_eq!(format_rate(3e-4), "3e-4");
        assert_eq!(format_rate(0.0015), "1.5e-3");
    }

    #[test]
    fn axis_ranges_hold_the_values_with_a_margin() {
        assert_eq!(axis_range(&[], false), 0.0..1.0);
        let r = axis_range(&[2.0, 4.0], false);
        assert!(r.start < 2.0 && r.end > 4.0);
        assert_eq!(axis_range(&[2.0, 4.0], true).start, 0.0);
        let flat = axis_range(&[3e-4], false);
        assert!(flat.start < 3e-4 && flat.end > 3e-4);
    }
}
