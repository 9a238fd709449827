//! The end-of-run PNG chart, drawn with plotters' bitmap backend into a memory buffer and
//! encoded with the `image` crate (plotters' own encoder would pull a second `image` version).
//!
//! Two panels sharing the x axis (optimiser step): the training loss per step (red, y from 0 to
//! the largest finite loss) and the validation top-1 in percent (blue points joined, 0–100 %).
//! Text (title, axis labels with units, tick labels, legends) uses the embedded font
//! (`crate::font`).

use std::path::Path;

use plotters::prelude::*;

use crate::{Error, Result};

const W: u32 = 800;
const H: u32 = 600;

/// Draws `losses` (step, loss) and `accuracies` (step, top-1 in [0, 1]) into a PNG at `path`.
pub fn draw(path: &Path, losses: &[(u64, f64)], accuracies: &[(u64, f64)]) -> Result<()> {
    crate::font::ensure()?;
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
    let root = root.titled("Fine-tuning run", ("sans-serif", 22)).map_err(|e| err(&e))?;
    let last = losses.iter().chain(accuracies).map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let finite: Vec<(f64, f64)> = losses.iter().filter(|p| p.1.is_finite()).map(|&(s, l)| (s as f64, l)).collect();
    let top_loss = finite.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-6) * 1.05;
    let accs: Vec<(f64, f64)> = accuracies.iter().map(|&(s, a)| (s as f64, 100.0 * a)).collect();
    let (upper, lower) = root.split_vertically((H - 30) / 2);
    let panels = [
        (
            &upper,
            "Training loss",
            "loss (cross-entropy, nats)",
            top_loss,
            &finite,
            RED,
            "train loss per step",
            false,
            SeriesLabelPosition::LowerLeft,
        ),
        (
            &lower,
            "Validation accuracy",
            "top-1 (%)",
            100.0,
            &accs,
            BLUE,
            "validation top-1",
            true,
            SeriesLabelPosition::LowerRight,
        ),
    ];
    // Legends where the curves rarely are: under a falling loss, under a rising accuracy.
    for (area, title, ylabel, ymax, points, color, legend, dots, corner) in panels {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..last, 0.0..ymax)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc(ylabel)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| if ymax >= 10.0 { format!("{y:.0}") } else { format!("{y:.2}") })
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 13))
            .light_line_style(RGBColor(246, 246, 246))
            .draw()
            .map_err(|e| err(&e))?;
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(legend)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        if dots {
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .position(corner)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .label_font(("sans-serif", 12))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dark pixels in a band of rows: text is black on white there or nothing is.
    fn dark(img: &image::RgbImage, rows: std::ops::Range<u32>, cols: std::ops::Range<u32>) -> usize {
        rows.flat_map(|y| cols.clone().map(move |x| (x, y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count()
    }

    #[test]
    fn the_chart_has_text() {
        let path = std::env::temp_dir().join(format!("bitgrad-chart-{}.png", std::process::id()));
        let losses: Vec<(u64, f64)> = (1..=50).map(|s| (s, 2.0 / (1.0 + s as f64 / 10.0))).collect();
        draw(&path, &losses, &[(10, 0.3), (30, 0.6), (50, 0.7)]).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        std::fs::remove_file(&path).ok();
        assert_eq!(img.dimensions(), (W, H));
        // The title (top band, centre), the y-axis label (left band) and the x tick labels and
        // "step" under the lower panel.
        assert!(dark(&img, 0..28, 250..550) > 40, "no title");
        assert!(dark(&img, 60..260, 0..24) > 40, "no y-axis label");
        assert!(dark(&img, H - 40..H, 60..W) > 40, "no x-axis text");
    }
}
