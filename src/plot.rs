//! PNG figures for experiment summaries: curves with mean ± std bands (learning curves, loss
//! curves) and box plots (test MSE per method). Text uses the embedded DejaVu Sans, so plotting
//! needs no system fonts; files are written atomically.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::prelude::*;

use crate::rundir::write_atomic_with;

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The embedded font is known-good; failing here would be a packaging bug.
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "invalid font")
            .expect("embedded DejaVu Sans");
    });
}

/// One curve: `mean[i] ± std[i]` at `x[i]` (std may be empty for a plain line), or with an
/// asymmetric band `bounds` = (lower, upper) such as a confidence interval.
#[derive(Clone, Debug)]
pub struct Band {
    pub name: String,
    pub x: Vec<f64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub bounds: Option<(Vec<f64>, Vec<f64>)>,
}

/// Errors from plotting (drawing backends report strings).
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("plot {0}: {1}")]
    Draw(String, String),
    #[error("plot: {0}")]
    Io(#[from] std::io::Error),
    #[error("plot {0}: nothing to draw ({1})")]
    Empty(String, &'static str),
}

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;

fn palette(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    C[i % C.len()]
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

fn pad((lo, hi): (f64, f64)) -> (f64, f64) {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - 0.05 * span, hi + 0.05 * span)
}

/// Curves with shaded ±std bands, linear axes (`log_y` puts y on a log scale; values ≤ 0 are
/// dropped there).
pub fn curves(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Band],
    log_y: bool,
) -> Result<(), PlotError> {
    register_font();
    let name = path.display().to_string();
    let lo_hi = |b: &Band, sign: f64| -> Vec<f64> {
        if let Some((lo, hi)) = &b.bounds {
            return if sign < 0.0 { lo.clone() } else { hi.clone() };
        }
        b.mean
            .iter()
            .enumerate()
            .map(|(i, m)| m + sign * b.std.get(i).copied().unwrap_or(0.0))
            .collect()
    };
    let xr = finite_range(series.iter().flat_map(|b| b.x.iter().copied()))
        .ok_or_else(|| PlotError::Empty(name.clone(), "no x values"))?;
    let ys = series
        .iter()
        .flat_map(|b| lo_hi(b, -1.0).into_iter().chain(lo_hi(b, 1.0)));
    let yr = finite_range(ys.filter(|v| !log_y || *v > 0.0))
        .ok_or_else(|| PlotError::Empty(name.clone(), "no finite y values"))?;
    let draw_err = |e: String| PlotError::Draw(name.clone(), e);
    write_atomic_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        let (x0, x1) = (xr.0, if xr.1 > xr.0 { xr.1 } else { xr.0 + 1.0 });
        if log_y {
            let (y0, y1) = (yr.0 / 1.5, yr.1 * 1.5);
            let chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(
                    x0..x1,
                    (y0..y1).log_scale().with_key_points(log_ticks(y0, y1)),
                )
                .map_err(|e| draw_err(e.to_string()))?;
            draw_curves(chart, x_label, y_label, series, &lo_hi, true).map_err(draw_err)?;
        } else {
            let (y0, y1) = pad(yr);
            let chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|e| draw_err(e.to_string()))?;
            draw_curves(chart, x_label, y_label, series, &lo_hi, false).map_err(draw_err)?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))
    })
}

/// Axis numbers without float noise: 20000 → "20k", 1500000 → "1.5M", 0.25 → "0.25".
/// Tick values of a log axis over [lo, hi]: 1, 2, 5 × 10^k, or every 1…9 × 10^k when that gives
/// fewer than four. (plotters' own log ticks can crowd and repeat a label near a power of ten.)
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let inside = |mults: &[f64]| -> Vec<f64> {
        let (k0, k1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
        (k0..=k1)
            .flat_map(|k| mults.iter().map(move |m| m * 10f64.powi(k)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let coarse = inside(&[1.0, 2.0, 5.0]);
    if coarse.len() >= 4 {
        return coarse;
    }
    let fine = inside(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
    if fine.len() >= 2 {
        return fine;
    }
    // Less than a step of the 1…9 grid (say 150…190): evenly spaced round values.
    let raw = (hi - lo) / 4.0;
    let unit = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * unit)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * unit);
    let first = (lo / step).ceil() as i64;
    (first..)
        .map(|i| i as f64 * step)
        .take_while(|v| *v <= hi)
        .collect()
}

/// A tick label: compact numbers, scientific below 10⁻³.
fn tick_label(v: f64) -> String {
    if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.0e}")
    } else {
        compact(v)
    }
}

fn compact(v: f64) -> String {
    let trim = |x: f64| {
        let s = format!("{x:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s == "-0" {
            "0".to_string()
        } else {
            s.to_string()
        }
    };
    match v.abs() {
        a if a >= 1e6 => format!("{}M", trim(v / 1e6)),
        a if a >= 1e3 => format!("{}k", trim(v / 1e3)),
        _ => trim(v),
    }
}

fn draw_curves<'a, Y>(
    mut chart: ChartContext<
        'a,
        BitMapBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    x_label: &str,
    y_label: &str,
    series: &[Band],
    lo_hi: &dyn Fn(&Band, f64) -> Vec<f64>,
    log_y: bool,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_label_formatter(&|v| compact(*v))
        // Short tick labels on both axes (a log axis's default ones run to 18 digits).
        .y_label_formatter(&|v| tick_label(*v))
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    let ok = |v: f64| v.is_finite() && (!log_y || v > 0.0);
    for (i, b) in series.iter().enumerate() {
        let color = palette(i);
        if !b.std.is_empty() || b.bounds.is_some() {
            let (lo, hi) = (lo_hi(b, -1.0), lo_hi(b, 1.0));
            let mut poly: Vec<(f64, f64)> =
                b.x.iter()
                    .zip(&hi)
                    .filter(|(x, y)| x.is_finite() && ok(**y))
                    .map(|(x, y)| (*x, *y))
                    .collect();
            poly.extend(
                b.x.iter()
                    .zip(&lo)
                    .rev()
                    .filter(|(x, y)| x.is_finite() && ok(**y))
                    .map(|(x, y)| (*x, *y)),
            );
            if poly.len() >= 3 {
                chart
                    .draw_series(std::iter::once(Polygon::new(poly, color.mix(0.2).filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        let pts: Vec<(f64, f64)> =
            b.x.iter()
                .zip(&b.mean)
                .filter(|(x, y)| x.is_finite() && ok(**y))
                .map(|(x, y)| (*x, *y))
                .collect();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(b.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())
}

/// Tukey box-plot statistics of one group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoxStats {
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    /// Most extreme values within 1.5 IQR of the box.
    pub whisker_lo: f64,
    pub whisker_hi: f64,
}

/// Quantile with linear interpolation between order statistics (NumPy's default).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < sorted.len() {
        sorted[i] + frac * (sorted[i + 1] - sorted[i])
    } else {
        sorted[i]
    }
}

pub fn box_stats(values: &[f64]) -> Option<BoxStats> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let (q1, median, q3) = (quantile(&v, 0.25), quantile(&v, 0.5), quantile(&v, 0.75));
    let iqr = q3 - q1;
    let whisker_lo = v
        .iter()
        .copied()
        .find(|x| *x >= q1 - 1.5 * iqr)
        .unwrap_or(q1);
    let whisker_hi = v
        .iter()
        .rev()
        .copied()
        .find(|x| *x <= q3 + 1.5 * iqr)
        .unwrap_or(q3);
    Some(BoxStats {
        q1,
        median,
        q3,
        whisker_lo,
        whisker_hi,
    })
}

/// Box plot per group (Tukey whiskers, outliers as dots), y on a log scale when `log_y` (the
/// paper's MSE figure).
pub fn boxes(
    path: &Path,
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
    log_y: bool,
) -> Result<(), PlotError> {
    register_font();
    let name = path.display().to_string();
    let all = groups
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| !log_y || *v > 0.0);
    let yr = finite_range(all).ok_or_else(|| PlotError::Empty(name.clone(), "no finite values"))?;
    let draw_err = |e: String| PlotError::Draw(name.clone(), e);
    let k = groups.len();
    write_atomic_with(path, |tmp| {
        let root = BitMapBackend::new(tmp, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(e.to_string()))?;
        if log_y {
            let chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(
                    -0.5..(k as f64 - 0.5),
                    (yr.0 / 1.5..yr.1 * 1.5)
                        .log_scale()
                        .with_key_points(log_ticks(yr.0 / 1.5, yr.1 * 1.5)),
                )
                .map_err(|e| draw_err(e.to_string()))?;
            draw_boxes(chart, y_label, groups, true).map_err(draw_err)?;
        } else {
            let (y0, y1) = pad(yr);
            let chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(48)
                .y_label_area_size(72)
                .build_cartesian_2d(-0.5..(k as f64 - 0.5), y0..y1)
                .map_err(|e| draw_err(e.to_string()))?;
            draw_boxes(chart, y_label, groups, false).map_err(draw_err)?;
        }
        root.present().map_err(|e| draw_err(e.to_string()))
    })
}

fn draw_boxes<'a, Y>(
    mut chart: ChartContext<
        'a,
        BitMapBackend<'a>,
        Cartesian2d<plotters::coord::types::RangedCoordf64, Y>,
    >,
    y_label: &str,
    groups: &[(String, Vec<f64>)],
    log_y: bool,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let names: Vec<String> = groups.iter().map(|(n, _)| n.clone()).collect();
    let label = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 {
            names.get(i as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&label)
        .y_label_formatter(&|v| tick_label(*v))
        .y_desc(y_label)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, (_, values)) in groups.iter().enumerate() {
        let vals: Vec<f64> = values
            .iter()
            .copied()
            .filter(|v| v.is_finite() && (!log_y || *v > 0.0))
            .collect();
        let Some(s) = box_stats(&vals) else { continue };
        let (x, w) = (i as f64, 0.3);
        let color = palette(i);
        let elems: Vec<DynElement<'static, BitMapBackend<'a>, (f64, f64)>> = vec![
            Rectangle::new([(x - w, s.q1), (x + w, s.q3)], color.mix(0.35).filled()).into_dyn(),
            Rectangle::new([(x - w, s.q1), (x + w, s.q3)], color.stroke_width(2)).into_dyn(),
            PathElement::new(
                vec![(x - w, s.median), (x + w, s.median)],
                BLACK.stroke_width(2),
            )
            .into_dyn(),
            PathElement::new(vec![(x, s.q3), (x, s.whisker_hi)], color.stroke_width(2)).into_dyn(),
            PathElement::new(vec![(x, s.q1), (x, s.whisker_lo)], color.stroke_width(2)).into_dyn(),
            PathElement::new(
                vec![(x - w / 2.0, s.whisker_hi), (x + w / 2.0, s.whisker_hi)],
                color.stroke_width(2),
            )
            .into_dyn(),
            PathElement::new(
                vec![(x - w / 2.0, s.whisker_lo), (x + w / 2.0, s.whisker_lo)],
                color.stroke_width(2),
            )
            .into_dyn(),
        ];
        chart.draw_series(elems).map_err(|e| e.to_string())?;
        let outliers = vals
            .iter()
            .filter(|v| **v < s.whisker_lo || **v > s.whisker_hi)
            .map(|v| Circle::new((x, *v), 3, color.filled()));
        chart.draw_series(outliers).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Blank drawing area helper for callers composing their own figures.
pub fn canvas(path: &Path) -> DrawingArea<BitMapBackend<'_>, Shift> {
    register_font();
    BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn box_stats_match_numpy_percentiles() {
        // numpy.percentile([1,2,3,4,5,6,7,8,9,100], [25,50,75]) = [3.25, 5.5, 7.75]
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 100.0];
        let s = box_stats(&v).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (3.25, 5.5, 7.75));
        assert_eq!(
            (s.whisker_lo, s.whisker_hi),
            (1.0, 9.0),
            "100 is an outlier beyond 1.5 IQR"
        );
        assert!(box_stats(&[f64::NAN]).is_none());
    }

    #[test]
    fn figures_are_written_as_png() {
        let dir = std::env::temp_dir().join(format!("funcrl-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let x: Vec<f64> = (0..50).map(|i| i as f64 * 1000.0).collect();
        let band = |name: &str, k: f64| Band {
            name: name.into(),
            x: x.clone(),
            mean: x
                .iter()
                .map(|v| 500.0 * (1.0 - (-v / (k * 1e4)).exp()))
                .collect(),
            std: x.iter().map(|_| 20.0).collect(),
            bounds: None,
        };
        let p = dir.join("curves.png");
        curves(
            &p,
            "CartPole-v1",
            "env steps",
            "eval return",
            &[band("funcid", 1.0), band("mle", 3.0)],
            false,
        )
        .unwrap();
        let q = dir.join("boxes.png");
        let groups = vec![
            ("funcid".to_string(), vec![1.0, 2.0, 3.0, 30.0]),
            ("aid".to_string(), vec![5.0, 6.0, 9.0]),
        ];
        boxes(&q, "dSprites", "test MSE", &groups, true).unwrap();
        for f in [&p, &q] {
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
            assert!(bytes.len() > 5_000, "{} is suspiciously small", f.display());
        }
        assert!(matches!(
            curves(&dir.join("e.png"), "t", "x", "y", &[], false),
            Err(PlotError::Empty(..))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_ticks_are_distinct_round_and_inside() {
        for (lo, hi) in [(0.8, 45.0), (1.2, 3.9), (150.0, 190.0), (1e-4, 2e3)] {
            let t = log_ticks(lo, hi);
            assert!(t.len() >= 2, "{lo}..{hi}: {t:?}");
            assert!(t.windows(2).all(|w| w[0] < w[1]), "{t:?}");
            assert!(t.iter().all(|v| *v >= lo && *v <= hi), "{t:?}");
            let labels: Vec<String> = t.iter().map(|v| tick_label(*v)).collect();
            let mut uniq = labels.clone();
            uniq.dedup();
            assert_eq!(uniq, labels, "repeated label");
        }
        assert_eq!(log_ticks(0.8, 45.0), vec![1.0, 2.0, 5.0, 10.0, 20.0]);
        assert_eq!(log_ticks(1.2, 3.9), vec![2.0, 3.0]);
        assert_eq!(
            log_ticks(150.0, 190.0),
            vec![150.0, 160.0, 170.0, 180.0, 190.0]
        );
    }

    #[test]
    fn compact_axis_numbers() {
        assert_eq!(compact(20000.0), "20k");
        assert_eq!(compact(1_500_000.0), "1.5M");
        assert_eq!(compact(2500.0), "2.5k");
        assert_eq!(compact(0.25), "0.25");
        assert_eq!(compact(-0.0001), "0");
        assert_eq!(compact(300.0), "300");
    }
}
