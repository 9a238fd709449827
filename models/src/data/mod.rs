//! Data: decoding images and BiT's preprocessing. (Datasets, augmentation and the loader join
//! this module with the fine-tuning issue.)

pub mod image;

pub use self::image::{eval_transform, images_to_tensor, read_rgb, Resize};
