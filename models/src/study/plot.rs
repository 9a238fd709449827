//! The PNG plot: top-1 against batch size, one line per normalization, drawn with plotters'
//! bitmap backend and encoded with `image` as train/chart.rs does.
//!
//! x is the batch size on a log2 scale (a tick and a grey line at each batch size of the grid);
//! y is top-1 in percent from [`y_range`]'s low to high end (multiples of 10 %, grey lines every
//! 10 %); each norm is a line of its colour ([`COLORS`](super::COLORS)) through the means, with a
//! vertical bar of ± one standard deviation at each point, named in the legend. Title, axis
//! labels and ticks use the embedded font (`crate::font`).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

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
    crate::font::ensure()?;
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
    let (y0, y1) = (y0 * 100.0, y1 * 100.0);
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let seeds = if study.seeds == 1 { "1 seed".to_string() } else { format!("mean ± std over {} seeds", study.seeds) };
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Top-1 against batch size ({seeds})"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|e| err(&e))?;
    let batches = study.batch_sizes.clone();
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(0)
        .y_labels(((y1 - y0) / 5.0).round() as usize + 1)
        .y_desc("top-1 on the test set (%)")
        .x_desc("batch size (examples per step, log scale)")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    let grey = RGBColor(215, 215, 215);
    let steps = ((y1 - y0) / 10.0).round() as usize;
    let hlines = (1..steps).map(|i| y0 + 10.0 * i as f64).map(|y| PathElement::new([(x0, y), (x1, y)], grey));
    chart.draw_series(hlines).map_err(|e| err(&e))?;
    chart.draw_series(xs.iter().map(|&v| PathElement::new([(v, y0), (v, y1)], grey))).map_err(|e| err(&e))?;
    // The batch sizes as tick labels under their grey lines (the mesh's own ticks would be at
    // log2 values, 2.0, 3.0 …, which nobody reads as batch sizes).
    let style = TextStyle::from(("sans-serif", 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    let ticks = batches.iter().map(|&b| EmptyElement::at((x(b), y0)) + Text::new(b.to_string(), (0, 8), style.clone()));
    chart.draw_series(ticks).map_err(|e| err(&e))?;
    for (i, norm) in study.norms.iter().enumerate() {
        let (_, (r, g, b)) = StudyResult::color_of(i);
        let color = RGBColor(r, g, b);
        let cells: Vec<_> = result.cells.iter().filter(|c| &c.norm == norm).collect();
        let points: Vec<(f64, f64)> = cells.iter().map(|c| (x(c.batch), 100.0 * c.top1_mean)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(3)))
            .map_err(|e| err(&e))?
            .label(norm.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled()))).map_err(|e| err(&e))?;
        let bars = cells.iter().map(|c| {
            let (m, s) = (100.0 * c.top1_mean, 100.0 * c.top1_std);
            PathElement::new([(x(c.batch), (m - s).max(y0)), (x(c.batch), (m + s).min(y1))], color.stroke_width(2))
        });
        chart.draw_series(bars).map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(160, 160, 160))
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
