//! The end-of-run PNG chart, drawn with plotters' bitmap backend into a memory buffer and
//! encoded with the `image` crate (plotters' own encoder would pull a second `image` version).
//!
//! No text: plotters needs a font backend (system fonts or an embedded font) for labels, which
//! this build leaves out. The layout is fixed instead: top panel the training loss per step (red,
//! y from 0 to the largest finite loss), bottom panel the validation top-1 (blue, points joined,
//! y from 0 to 1 with grey lines at 25 %, 50 %, 75 %); both share the x axis (step 0 to the last).

use std::path::Path;

use plotters::prelude::*;

use crate::{Error, Result};

const W: u32 = 800;
const H: u32 = 600;

/// Draws `losses` (step, loss) and `accuracies` (step, top-1 in [0, 1]) into a PNG at `path`.
pub fn draw(path: &Path, losses: &[(u64, f64)], accuracies: &[(u64, f64)]) -> Result<()> {
    let mut buf = vec![255u8; (W * H * 3) as usize];
    render(&mut buf, losses, accuracies).map_err(|e| Error::Msg(format!("cannot draw the chart: {e}")))?;
    let img = image::RgbImage::from_raw(W, H, buf).ok_or_else(|| Error::Msg("chart buffer size".into()))?;
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Msg(format!("cannot write the chart {}: {e}", path.display())))
}

fn render(buf: &mut [u8], losses: &[(u64, f64)], accuracies: &[(u64, f64)]) -> std::result::Result<(), String> {
    let err = |e: &dyn std::fmt::Debug| format!("{e:?}");
    let root = BitMapBackend::with_buffer(buf, (W, H)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let last = losses.iter().chain(accuracies).map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let finite: Vec<(f64, f64)> = losses.iter().filter(|p| p.1.is_finite()).map(|&(s, l)| (s as f64, l)).collect();
    let top_loss = finite.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-6) * 1.05;
    let (upper, lower) = root.split_vertically(H / 2);
    for (area, ymax, points, color, grid) in [
        (&upper, top_loss, finite, RED, false),
        (&lower, 1.0, accuracies.iter().map(|&(s, a)| (s as f64, a)).collect(), BLUE, true),
    ] {
        let area = area.margin(12, 12, 12, 12);
        let mut chart = ChartBuilder::on(&area).build_cartesian_2d(0.0..last, 0.0..ymax).map_err(|e| err(&e))?;
        let frame = [(0.0, 0.0), (last, 0.0), (last, ymax), (0.0, ymax), (0.0, 0.0)];
        chart.draw_series(std::iter::once(PathElement::new(frame, BLACK))).map_err(|e| err(&e))?;
        if grid {
            let lines = [0.25, 0.5, 0.75].map(|y| PathElement::new([(0.0, y), (last, y)], RGBColor(200, 200, 200)));
            chart.draw_series(lines).map_err(|e| err(&e))?;
        }
        chart.draw_series(LineSeries::new(points.clone(), color.stroke_width(2))).map_err(|e| err(&e))?;
        if grid {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(&e))?;
        }
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
