//! The dataset formats on tiny synthetic files written here: ImageFolder (layouts, sorting,
//! corrupt and unreadable files, refusals), CIFAR-10/100 binary, IDX (plain and gzipped),
//! safetensors tensors, truncated inputs; and Fashion-MNIST from Debian's package if installed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::image::{Rgb, RgbImage};
use bitgrad_models::data::*;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bitgrad-data-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn png(path: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    RgbImage::from_pixel(w, h, Rgb([v, v, v])).save(path).unwrap();
}

#[test]
fn image_folder_train_val_sorted_and_skips() {
    let root = tmp("if");
    // Classes deliberately created out of order; files too.
    for (split, n) in [("train", 3), ("val", 2)] {
        for class in ["zebra", "ant", "moth"] {
            for i in (0..n).rev() {
                png(&root.join(split).join(class).join(format!("{i}.png")), 40, 30, i as u8);
            }
        }
    }
    // Not an image at all (skipped at open), a PNG cut short after its header (skipped by the
    // loader when decoding fails), and a non-image extension (ignored).
    std::fs::write(root.join("train/ant/bad.jpg"), b"not a jpeg").unwrap();
    let good = std::fs::read(root.join("train/ant/0.png")).unwrap();
    std::fs::write(root.join("train/ant/cut.png"), &good[..good.len() - 20]).unwrap();
    std::fs::write(root.join("train/moth/notes.txt"), b"hello").unwrap();

    let (train, val) = ImageFolder::open_train_val(&root, 0.2, 0).unwrap();
    assert_eq!(train.classes(), ["ant", "moth", "zebra"]);
    assert_eq!((train.len(), val.len()), (10, 6)); // 3·3 + cut.png; bad.jpg skipped
    assert_eq!(train.image_size(), Some((30, 40)));
    let names: Vec<String> =
        (0..4).map(|i| train.path(i).unwrap().file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names, ["0.png", "1.png", "2.png", "cut.png"]);
    assert_eq!((train.label(0).unwrap(), train.label(4).unwrap(), train.label(9).unwrap()), (0, 1, 2));
    let sk = train.skipped();
    assert_eq!(sk.len(), 1);
    assert!(sk[0].item.ends_with("bad.jpg"), "{sk:?}");
    assert_eq!(train.load(2).unwrap().get_pixel(0, 0).0, [2, 2, 2]);
    let e = train.load(3).unwrap_err().to_string();
    assert!(e.contains("cut.png"), "{e}");

    // The loader leaves cut.png out of its batch and reports it by name.
    let ds: Arc<dyn Dataset> = Arc::new(train);
    let cfg =
        LoaderConfig { batch_size: 4, order: Order::Sequential, drop_last: false, workers: 2, prefetch: 2, seed: 0 };
    let loader = Loader::new(ds, Transform::Eval { size: 8, resize: Resize::Direct }, cfg).unwrap();
    let batches: Vec<Batch> = loader.epoch(0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), [3, 4, 2]);
    assert_eq!(batches[0].images.dims(), [3, 3, 8, 8]);
    let sk = loader.skipped();
    assert_eq!(sk.len(), 2);
    assert!(sk.iter().any(|s| s.item.ends_with("cut.png")), "{sk:?}");
}

#[test]
fn image_folder_split_ratio_and_refusals() {
    let root = tmp("split");
    for class in ["a", "b"] {
        for i in 0..10 {
            png(&root.join(class).join(format!("{i:02}.png")), 4, 4, i);
        }
    }
    std::fs::write(root.join("a/zz.png"), b"junk").unwrap();
    let (t1, v1) = ImageFolder::open_train_val(&root, 0.3, 5).unwrap();
    // The junk file is reported once, by the train part.
    assert_eq!((t1.skipped().len(), v1.skipped().len()), (1, 0));
    let (t2, v2) = ImageFolder::open_train_val(&root, 0.3, 5).unwrap();
    let (_, v3) = ImageFolder::open_train_val(&root, 0.3, 6).unwrap();
    assert_eq!((t1.len(), v1.len()), (14, 6));
    let paths = |d: &ImageFolder| (0..d.len()).map(|i| d.path(i).unwrap().to_path_buf()).collect::<Vec<_>>();
    assert_eq!(paths(&v1), paths(&v2));
    assert_ne!(paths(&v1), paths(&v3));
    assert_eq!(paths(&t1), paths(&t2));
    assert!(paths(&t1).iter().all(|p| !paths(&v1).contains(p)));
    assert!(ImageFolder::open(&root).unwrap().split(1.0, 0).is_err());

    // Refusals with messages.
    let empty = tmp("empty-class");
    png(&empty.join("a/x.png"), 2, 2, 0);
    std::fs::create_dir_all(empty.join("b")).unwrap();
    let e = ImageFolder::open(&empty).unwrap_err().to_string();
    assert!(e.contains("\"b\"") && e.contains("no .jpg"), "{e}");
    let one = tmp("one-class");
    png(&one.join("a/x.png"), 2, 2, 0);
    let e = ImageFolder::open(&one).unwrap_err().to_string();
    assert!(e.contains("only one class"), "{e}");
    let none = tmp("no-classes");
    let e = ImageFolder::open(&none).unwrap_err().to_string();
    assert!(e.contains("no class folders"), "{e}");
    let e = ImageFolder::open(none.join("missing")).unwrap_err().to_string();
    assert!(e.contains("missing"), "{e}");
    let broken = tmp("all-broken");
    png(&broken.join("a/x.png"), 2, 2, 0);
    std::fs::create_dir_all(broken.join("b")).unwrap();
    std::fs::write(broken.join("b/y.png"), b"garbage").unwrap();
    let e = ImageFolder::open(&broken).unwrap_err().to_string();
    assert!(e.contains("unreadable") && e.contains("y.png"), "{e}");
    // Mismatched train/val classes.
    let mism = tmp("mismatch");
    for (s, c) in [("train", "a"), ("train", "b"), ("val", "a"), ("val", "c")] {
        png(&mism.join(s).join(c).join("x.png"), 2, 2, 0);
    }
    let e = ImageFolder::open_train_val(&mism, 0.2, 0).unwrap_err().to_string();
    assert!(e.contains("same folders"), "{e}");
}

/// A CIFAR record: label byte(s), then the R, G, B planes; pixel (y, x) of plane c = value.
fn cifar_record(labels: &[u8], seed: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    for c in 0..3u32 {
        for p in 0..1024u32 {
            r.push((p.wrapping_mul(7) + c * 50 + seed as u32) as u8);
        }
    }
    r
}

#[test]
fn cifar10_and_100() {
    let dir = tmp("cifar").join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    for b in 1..=5u8 {
        let bytes: Vec<u8> = (0..2).flat_map(|i| cifar_record(&[b * 2 - 2 + i], b * 10 + i)).collect();
        std::fs::write(dir.join(format!("data_batch_{b}.bin")), bytes).unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), cifar_record(&[3], 99)).unwrap();
    // Opening the parent finds the archive's folder.
    let train = Cifar::Ten.open(dir.parent().unwrap(), true).unwrap();
    assert_eq!((train.len(), train.num_classes(), train.image_size()), (10, 10, Some((32, 32))));
    assert_eq!(train.classes()[0], "airplane");
    assert_eq!((0..10).map(|i| train.label(i).unwrap()).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
    // Example 3 = batch 2 record 1 (seed 21): pixel (x 5, y 2) = p 69 → R 69·7+21, G +50, B +100.
    let px = train.load(3).unwrap().get_pixel(5, 2).0;
    let base = (69u32 * 7 + 21) as u8;
    assert_eq!(px, [base, base.wrapping_add(50), base.wrapping_add(100)]);
    let test = Cifar::Ten.open(&dir, false).unwrap();
    assert_eq!((test.len(), test.label(0).unwrap()), (1, 3));

    // Truncated file, bad label, names file of the wrong length.
    let mut cut = cifar_record(&[1], 0);
    cut.pop();
    std::fs::write(dir.join("test_batch.bin"), &cut).unwrap();
    let e = Cifar::Ten.open(&dir, false).unwrap_err().to_string();
    assert!(e.contains("test_batch.bin") && e.contains("3073"), "{e}");
    std::fs::write(dir.join("test_batch.bin"), cifar_record(&[10], 0)).unwrap();
    let e = Cifar::Ten.open(&dir, false).unwrap_err().to_string();
    assert!(e.contains("label 10"), "{e}");
    std::fs::write(dir.join("test_batch.bin"), cifar_record(&[1], 0)).unwrap();
    std::fs::write(dir.join("batches.meta.txt"), "a\nb\n").unwrap();
    assert!(Cifar::Ten.open(&dir, false).unwrap_err().to_string().contains("2 names"));

    let d100 = tmp("cifar100");
    let bytes: Vec<u8> = [(3u8, 77u8), (19, 5)].iter().flat_map(|&(c, f)| cifar_record(&[c, f], 1)).collect();
    std::fs::write(d100.join("train.bin"), bytes).unwrap();
    let fine = Cifar::HundredFine.open(&d100, true).unwrap();
    let coarse = Cifar::HundredCoarse.open(&d100, true).unwrap();
    assert_eq!((fine.num_classes(), fine.label(0).unwrap(), fine.label(1).unwrap()), (100, 77, 5));
    assert_eq!((coarse.num_classes(), coarse.label(0).unwrap(), coarse.label(1).unwrap()), (20, 3, 19));
    // CIFAR-10 records read as CIFAR-100 do not divide: a clear error, not garbage.
    assert!(Cifar::HundredFine.open(dir.parent().unwrap().join("cifar-10-batches-bin"), false).is_err());
}

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend_from_slice(&d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn idx_plain_gzipped_and_broken() {
    let dir = tmp("idx");
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
    std::fs::write(dir.join("train-images-idx3-ubyte.gz"), gzip(&idx_bytes(&[3, 4, 5], &pixels))).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), idx_bytes(&[3], &[2, 0, 9])).unwrap();
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), idx_bytes(&[1, 4, 5], &pixels[..20])).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte.gz"), gzip(&idx_bytes(&[1], &[4]))).unwrap();
    let train = open_idx_dir(&dir, true).unwrap();
    assert_eq!((train.len(), train.num_classes(), train.image_size()), (3, 10, Some((4, 5))));
    // Example 1, row 2, column 3 = byte 20 + 2·5 + 3 = 33, gray → RGB.
    assert_eq!(train.load(1).unwrap().get_pixel(3, 2).0, [33, 33, 33]);
    assert_eq!(train.label(2).unwrap(), 9);
    let fashion = train.with_classes(FASHION_MNIST_CLASSES.iter().map(|s| s.to_string()).collect()).unwrap();
    assert_eq!(fashion.classes()[9], "Ankle boot");
    let test = open_idx_dir(&dir, false).unwrap();
    assert_eq!((test.len(), test.label(0).unwrap()), (1, 4));

    let bad = tmp("idx-bad");
    let img = bad.join("i");
    let lab = bad.join("l");
    std::fs::write(&lab, idx_bytes(&[3], &[0, 1, 2])).unwrap();
    // Truncated data, header shorter than its dimensions, wrong type, count mismatch, broken gzip.
    std::fs::write(&img, idx_bytes(&[3, 4, 5], &pixels[..59])).unwrap();
    let e = open_idx(&img, &lab).unwrap_err().to_string();
    assert!(e.contains("60") && e.contains("59"), "{e}");
    std::fs::write(&img, [0, 0, 8, 3, 0, 0]).unwrap();
    assert!(open_idx(&img, &lab).unwrap_err().to_string().contains("header"));
    let mut f32_type = idx_bytes(&[3, 4, 5], &pixels);
    f32_type[2] = 0x0d;
    std::fs::write(&img, f32_type).unwrap();
    assert!(open_idx(&img, &lab).unwrap_err().to_string().contains("0x0d"));
    std::fs::write(&img, idx_bytes(&[2, 4, 5], &pixels[..40])).unwrap();
    assert!(open_idx(&img, &lab).unwrap_err().to_string().contains("2 images"));
    let gz = gzip(&idx_bytes(&[3, 4, 5], &pixels));
    std::fs::write(&img, &gz[..gz.len() / 2]).unwrap();
    assert!(open_idx(&img, &lab).unwrap_err().to_string().contains("gzip"));
    assert!(open_idx_dir(&bad, true).unwrap_err().to_string().contains("no train"));
}

fn write_st(path: &Path, tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>, meta: Option<(&str, &str)>) {
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta = meta.map(|(k, v)| std::collections::HashMap::from([(k.to_string(), v.to_string())]));
    safetensors::serialize_to_file(views, meta, path).unwrap();
}

#[test]
fn safetensors_u8_nhwc_and_f32_nchw() {
    use safetensors::Dtype;
    let dir = tmp("st");
    let p = dir.join("d.safetensors");
    let pixels: Vec<u8> = (0..2 * 2 * 3 * 3).map(|i| i as u8).collect();
    let labels: Vec<u8> = [1i64, 0].iter().flat_map(|l| l.to_le_bytes()).collect();
    write_st(
        &p,
        vec![("images", Dtype::U8, vec![2, 2, 3, 3], pixels.clone()), ("labels", Dtype::I64, vec![2], labels.clone())],
        Some(("classes", "cat\ndog")),
    );
    let d = open_safetensors(&p).unwrap();
    assert_eq!(
        (d.len(), d.classes().to_vec(), d.image_size()),
        (2, vec!["cat".to_string(), "dog".into()], Some((2, 3)))
    );
    // Example 1, (x 2, y 1): offset 18 + (1·3 + 2)·3 = 33.
    assert_eq!(d.load(1).unwrap().get_pixel(2, 1).0, [33, 34, 35]);
    assert_eq!(d.label(0).unwrap(), 1);

    // The same images as NCHW f32 in [0, 1] give the same bytes.
    let mut nchw = vec![0f32; pixels.len()];
    for n in 0..2 {
        for y in 0..2 {
            for x in 0..3 {
                for c in 0..3 {
                    nchw[((n * 3 + c) * 2 + y) * 3 + x] = pixels[((n * 2 + y) * 3 + x) * 3 + c] as f32 / 255.0;
                }
            }
        }
    }
    let bytes: Vec<u8> = nchw.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(
        &p,
        vec![("images", Dtype::F32, vec![2, 3, 2, 3], bytes), ("labels", Dtype::I64, vec![2], labels.clone())],
        None,
    );
    let f = open_safetensors(&p).unwrap();
    assert_eq!(f.classes(), ["0", "1"]);
    for i in 0..2 {
        assert_eq!(f.load(i).unwrap(), d.load(i).unwrap());
    }

    // Refusals: out-of-range floats, wrong label count, missing tensor, negative label, garbage.
    let big: Vec<u8> = [2.0f32; 18].iter().flat_map(|v| v.to_le_bytes()).collect();
    write_st(
        &p,
        vec![("images", Dtype::F32, vec![1, 1, 3, 6], big), ("labels", Dtype::I64, vec![1], labels[..8].to_vec())],
        None,
    );
    assert!(open_safetensors(&p).unwrap_err().to_string().contains("[0, 1]"));
    write_st(
        &p,
        vec![
            ("images", Dtype::U8, vec![2, 2, 3, 3], pixels.clone()),
            ("labels", Dtype::I64, vec![1], labels[..8].to_vec()),
        ],
        None,
    );
    assert!(open_safetensors(&p).unwrap_err().to_string().contains("(2,)"));
    write_st(&p, vec![("pics", Dtype::U8, vec![2, 2, 3, 3], pixels.clone())], None);
    assert!(open_safetensors(&p).unwrap_err().to_string().contains("no \"images\""));
    let neg: Vec<u8> = [-1i64, 0].iter().flat_map(|l| l.to_le_bytes()).collect();
    write_st(
        &p,
        vec![("images", Dtype::U8, vec![2, 2, 3, 3], pixels.clone()), ("labels", Dtype::I64, vec![2], neg)],
        None,
    );
    assert!(open_safetensors(&p).unwrap_err().to_string().contains("-1"));
    let good = {
        write_st(
            &p,
            vec![("images", Dtype::U8, vec![2, 2, 3, 3], pixels), ("labels", Dtype::I64, vec![2], labels)],
            None,
        );
        std::fs::read(&p).unwrap()
    };
    std::fs::write(&p, &good[..good.len() - 5]).unwrap();
    let e = open_safetensors(&p).unwrap_err().to_string();
    assert!(e.contains("d.safetensors") && e.contains("safetensors"), "{e}");
}

/// Debian's `dataset-fashion-mnist` package, when installed: the real files parse and have
/// Fashion-MNIST's sizes. Skipped (with a note) otherwise.
#[test]
fn debian_fashion_mnist_if_installed() {
    let candidates = ["/usr/share/datasets/fashion-mnist"];
    let Some(dir) = candidates.iter().map(Path::new).find(|d| d.is_dir()) else {
        eprintln!("skipped: Debian's dataset-fashion-mnist is not installed (looked in {candidates:?})");
        return;
    };
    let train = open_idx_dir(dir, true).unwrap();
    let test = open_idx_dir(dir, false).unwrap();
    assert_eq!(
        (train.len(), test.len(), train.num_classes(), train.image_size()),
        (60_000, 10_000, 10, Some((28, 28)))
    );
}
