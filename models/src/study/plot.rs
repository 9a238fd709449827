//! The PNG plot: top-1 against batch size, one line per normalization, drawn with plotters'
//! bitmap backend and encoded with `image` as train/chart.rs does.
//!
//! No text (no font dependency), so the layout is fixed and described by the table: x is log2 of
//! the batch size with a grey vertical line at each batch size of the grid; y is top-1 from
//! [`y_range`]'s low to high end (multiples of 10 %) with grey lines every 10 %; each norm is a
//! line of its colour ([`COLORS`](super::COLORS)) through the means, with a vertical bar of ± one
//! standard deviation at each point.

use std::path::Path;

use plotters::prelude::*;

use crate::{Error, Result};

use super::report::StudyResult;

const W: u32 = 800;
const H: u32 = 500;

/// The plot's y range: the lowest mean − std and highest mean + std, rounded out to multiples
/// of 0.1 within [0, 1] and at least 0.1 wide.
pub fn y_range(result: &StudyResult) -> (f64, f64) {
    let lo = result.cells.iter().map(|c| c.top1_mean - c.top1_std).fold(1.0f64, f64::min);
    let hi = result.cells.iter().map(|c| c.top1_mean + c.top1_std).fold(0.0f64, f64::max);
    let lo = ((lo * 10.0).floor() / 10.0).clamp(0.0, 0.9);
    let hi = ((hi * 10.0).ceil() / 10.0).clamp(lo + 0.1, 1.0);
    (lo, hi)
}

pub(super) fn draw(path: &Path, result: &StudyResult) -> Result<()> {
    let mut buf = vec![255u8; (W * H * 3) as usize];
    render(&mut buf, result).map_err(|e| Error::Msg(format!("cannot draw the study plot: {e}")))?;
    let img = image::RgbImage::from_raw(W, H, buf).ok_or_else(|| Error::Msg("plot buffer size".into()))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Msg(format!("cannot write the plot {}: {e}", path.display())))
}

fn render(buf: &mut [u8], result: &StudyResult) -> std::result::Result<(), String> {
    let err = |e: &dyn std::fmt::Debug| format!("{e:?}");
    let study = &result.study;
    let x = |b: usize| (b.max(1) as f64).log2();
    let xs: Vec<f64> = study.batch_sizes.iter().map(|&b| x(b)).collect();
    let (x0, x1) = (xs.iter().copied().fold(f64::INFINITY, f64::min), xs.iter().copied().fold(0.0, f64::max));
    let (x0, x1) = (x0 - 0.3, x1.max(x0 + 1.0) + 0.3);
    let (y0, y1) = y_range(result);
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let area = root.margin(12, 12, 12, 12);
    let mut chart = ChartBuilder::on(&area).build_cartesian_2d(x0..x1, y0..y1).map_err(|e| err(&e))?;
    let grey = RGBColor(210, 210, 210);
    let steps = ((y1 - y0) * 10.0).round() as usize;
    let hlines = (1..steps).map(|i| y0 + i as f64 / 10.0).map(|y| PathElement::new([(x0, y), (x1, y)], grey));
    chart.draw_series(hlines).map_err(|e| err(&e))?;
    chart.draw_series(xs.iter().map(|&v| PathElement::new([(v, y0), (v, y1)], grey))).map_err(|e| err(&e))?;
    let frame = [(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)];
    chart.draw_series(std::iter::once(PathElement::new(frame, BLACK))).map_err(|e| err(&e))?;
    for (i, norm) in study.norms.iter().enumerate() {
        let (_, (r, g, b)) = StudyResult::color_of(i);
        let color = RGBColor(r, g, b);
        let cells: Vec<_> = result.cells.iter().filter(|c| &c.norm == norm).collect();
        let points: Vec<(f64, f64)> = cells.iter().map(|c| (x(c.batch), c.top1_mean)).collect();
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(3))).map_err(|e| err(&e))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled()))).map_err(|e| err(&e))?;
        let bars = cells.iter().map(|c| {
            let (lo, hi) = ((c.top1_mean - c.top1_std).max(y0), (c.top1_mean + c.top1_std).min(y1));
            PathElement::new([(x(c.batch), lo), (x(c.batch), hi)], color.stroke_width(2))
        });
        chart.draw_series(bars).map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
