//! Images in, model inputs out: decoding, BiT's evaluation resize, and the [−1, 1] scaling.
//!
//! BiT feeds RGB scaled to [−1, 1] (`x/127.5 − 1`, bit-spec §3.5; timm's mean = std = 0.5 is the
//! same). Two evaluation resizes are in use and give different numbers, so both are offered:
//! * [`Resize::Direct`] — the original BiT code: resize straight to `size × size` (the aspect
//!   ratio is not kept, nothing is cropped);
//! * [`Resize::ShorterSide`] — timm: resize the shorter side to `⌊size / crop_pct⌋` keeping the
//!   aspect ratio, then take the centre `size × size` crop.
//!
//! Resampling is bilinear with a triangle filter whose support widens when downscaling (what
//! PIL's `BILINEAR`, which torchvision and timm use on PIL images, does), via the `image` crate.

use std::path::Path;

use ::image::imageops::{self, FilterType};
use ::image::{ImageReader, RgbImage};
use bitgrad_engine::{Device, Tensor};

use crate::{Error, Result};

/// How an image is brought to the model's square input size for evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Resize {
    /// Original BiT: resize to `size × size` directly.
    Direct,
    /// timm: shorter side to `⌊size / crop_pct⌋`, then a centre crop of `size × size`.
    ShorterSide { crop_pct: f64 },
}

/// Reads and decodes an image file (PNG or JPEG, by content, not by extension) as 8-bit RGB;
/// grayscale and alpha images are converted. Errors name the file.
pub fn read_rgb(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let reader = ImageReader::open(path).map_err(|e| Error::io(path, e))?;
    let reader = reader.with_guessed_format().map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(Error::format(path, "image", "unrecognised format (PNG and JPEG are supported)"));
    }
    let img = reader.decode().map_err(|e| Error::format(path, "image", e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::format(path, "image", "the image has no pixels"));
    }
    Ok(img.to_rgb8())
}

/// Resizes `img` to `size × size` as `mode` says (see the module docs).
pub fn eval_transform(img: &RgbImage, size: u32, mode: Resize) -> Result<RgbImage> {
    if size == 0 {
        return Err(Error::Config("the input size must be positive".into()));
    }
    match mode {
        Resize::Direct => Ok(imageops::resize(img, size, size, FilterType::Triangle)),
        Resize::ShorterSide { crop_pct } => {
            if !(crop_pct > 0.0 && crop_pct <= 1.0) {
                return Err(Error::Config(format!("crop_pct must be in (0, 1], got {crop_pct}")));
            }
            let scale = ((size as f64 / crop_pct).floor() as u32).max(size);
            let (w, h) = shorter_side_dims(img.width(), img.height(), scale);
            let resized = imageops::resize(img, w, h, FilterType::Triangle);
            // torchvision's CenterCrop: top = round((h − size) / 2), likewise left.
            let left = ((w - size) as f64 / 2.0).round() as u32;
            let top = ((h - size) as f64 / 2.0).round() as u32;
            Ok(imageops::crop_imm(&resized, left, top, size, size).to_image())
        }
    }
}

/// The size torchvision's `Resize(scale)` gives: the shorter side becomes `scale`, the longer one
/// `⌊scale · long / short⌋`.
fn shorter_side_dims(w: u32, h: u32, scale: u32) -> (u32, u32) {
    if w <= h {
        (scale, ((scale as u64 * h as u64) / w as u64) as u32)
    } else {
        (((scale as u64 * w as u64) / h as u64) as u32, scale)
    }
}

/// Stacks same-sized RGB images into an NCHW f32 tensor scaled to [−1, 1] on `device`.
pub fn images_to_tensor(images: &[RgbImage], device: Device) -> Result<Tensor> {
    let Some(first) = images.first() else {
        return Err(Error::Msg("no images to stack".into()));
    };
    let (w, h) = first.dimensions();
    let plane = (w * h) as usize;
    let mut data = Vec::with_capacity(images.len() * 3 * plane);
    for (i, img) in images.iter().enumerate() {
        if img.dimensions() != (w, h) {
            return Err(Error::Msg(format!(
                "image {i} is {}×{}, the first is {w}×{h}: resize them to one size first",
                img.width(),
                img.height()
            )));
        }
        for c in 0..3 {
            data.extend(img.pixels().map(|p| p[c] as f32 / 127.5 - 1.0));
        }
    }
    Ok(Tensor::from_vec(data, [images.len(), 3, h as usize, w as usize], device)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::image::{GrayImage, Luma, Rgb};

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("bitgrad-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn scaling_and_layout() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([0, 255, 51]));
        img.put_pixel(1, 0, Rgb([255, 0, 204]));
        let t = images_to_tensor(&[img], Device::Cpu).unwrap();
        assert_eq!(t.dims(), [1, 3, 1, 2]);
        let v = t.to_vec::<f32>().unwrap();
        let want = [-1.0, 1.0, 1.0, -1.0, 51.0 / 127.5 - 1.0, 204.0 / 127.5 - 1.0];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
    }

    #[test]
    fn direct_and_shorter_side_geometry() {
        // A 40×20 image whose left half is black and right half white.
        let img = RgbImage::from_fn(40, 20, |x, _| if x < 20 { Rgb([0; 3]) } else { Rgb([255; 3]) });
        let d = eval_transform(&img, 8, Resize::Direct).unwrap();
        assert_eq!(d.dimensions(), (8, 8));
        assert_eq!(d.get_pixel(0, 4)[0], 0);
        assert_eq!(d.get_pixel(7, 4)[0], 255);
        // Shorter side 20 → 8 (crop_pct 1): 16×8, centre crop 8×8 = columns 4..12 of the resize,
        // which straddle the edge in the middle.
        let s = eval_transform(&img, 8, Resize::ShorterSide { crop_pct: 1.0 }).unwrap();
        assert_eq!(s.dimensions(), (8, 8));
        assert_eq!(s.get_pixel(0, 4)[0], 0);
        assert_eq!(s.get_pixel(7, 4)[0], 255);
        assert_eq!(shorter_side_dims(40, 20, 9), (18, 9));
        assert_eq!(shorter_side_dims(20, 41, 10), (10, 20));
        // crop_pct 0.875 at 224: shorter side 256.
        let big = RgbImage::new(300, 400);
        assert_eq!(
            eval_transform(&big, 224, Resize::ShorterSide { crop_pct: 0.875 }).unwrap().dimensions(),
            (224, 224)
        );
        assert!(eval_transform(&big, 224, Resize::ShorterSide { crop_pct: 0.0 }).is_err());
        assert!(eval_transform(&big, 0, Resize::Direct).is_err());
    }

    #[test]
    fn files_gray_corrupt_missing() {
        let gray = GrayImage::from_pixel(3, 2, Luma([128]));
        let p = tmp("gray.png");
        gray.save(&p).unwrap();
        let rgb = read_rgb(&p).unwrap();
        assert_eq!(rgb.dimensions(), (3, 2));
        assert_eq!(rgb.get_pixel(2, 1).0, [128, 128, 128]);

        let bad = tmp("bad.png");
        let mut bytes = std::fs::read(&p).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&bad, &bytes).unwrap();
        let e = read_rgb(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.png") && e.contains("image"), "{e}");

        // By content: a .jpg that is not a JPEG fails to decode; an unknown extension with
        // unknown content is not guessed at.
        let text = tmp("notes.jpg");
        std::fs::write(&text, b"hello, not an image").unwrap();
        let e = read_rgb(&text).unwrap_err().to_string();
        assert!(e.contains("notes.jpg") && e.contains("not a valid image"), "{e}");
        let text = tmp("notes.dat");
        std::fs::write(&text, b"hello, not an image").unwrap();
        let e = read_rgb(&text).unwrap_err().to_string();
        assert!(e.contains("notes.dat") && e.contains("unrecognised format"), "{e}");

        let e = read_rgb(tmp("missing.png")).unwrap_err().to_string();
        assert!(e.contains("missing.png"), "{e}");
        assert!(images_to_tensor(&[], Device::Cpu).is_err());
        let e = images_to_tensor(&[RgbImage::new(2, 2), RgbImage::new(3, 2)], Device::Cpu).unwrap_err();
        assert!(e.to_string().contains("3×2"), "{e}");
    }
}
