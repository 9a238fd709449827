//! The embedded font of the PNG charts (Roboto Regular, Apache-2.0, assets/fonts/), registered
//! with plotters' `ab_glyph` text backend once, as the `sans-serif` family: charts get titles,
//! axis labels, tick labels and legends without depending on the system's fonts.

use std::sync::OnceLock;

use crate::{Error, Result};

const ROBOTO: &[u8] = include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/fonts/Roboto-Regular.ttf"));

/// Registers the font (once per process); every chart calls this before drawing.
pub(crate) fn ensure() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, ROBOTO).is_ok()
    });
    ok.then_some(()).ok_or_else(|| Error::Msg("the embedded chart font could not be read".into()))
}
