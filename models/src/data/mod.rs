//! Data: datasets (ImageFolder, CIFAR binary, IDX, safetensors tensors, few-shot subsets),
//! decoding and BiT's transforms, MixUp, and the multi-threaded deterministic loader.
//! docs/data.md describes the formats and the determinism rules.

pub mod cifar;
pub mod dataset;
pub mod idx;
pub mod image;
pub mod image_folder;
pub mod loader;
pub mod mixup;
pub mod tensors;
pub mod transform;

pub use self::cifar::{Cifar, CIFAR10_CLASSES};
pub use self::dataset::{shots, Dataset, InMemory, Skipped, Subset};
pub use self::idx::{idx_from_bytes, open_idx, open_idx_dir, FASHION_MNIST_CLASSES};
pub use self::image::{eval_transform, images_to_tensor, read_rgb, Resize};
pub use self::image_folder::ImageFolder;
pub use self::loader::{bench_loader, Batch, Batches, Loader, LoaderBench, LoaderConfig, Order, Position, Shard};
pub use self::mixup::{sample_beta, sample_gamma, MixUp, Mixed};
pub use self::tensors::open_safetensors;
pub use self::transform::Transform;
