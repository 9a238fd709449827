//! The transforms and the loader: crop/flip geometry, per-(epoch, index) determinism, every
//! example once per epoch, seeded orders, worker-count independence, resume positions,
//! drop_last, sampling with replacement, a clean stop when dropped, and the benchmark.

use std::sync::Arc;

use bitgrad_models::data::*;
use bitgrad_models::schedule::Resolution;

/// `n` 6×6 RGB images; pixel (x, y) of image i = (i, 10·y + x, 0); label = i mod 3.
fn toy(n: usize) -> Arc<dyn Dataset> {
    let mut px = Vec::new();
    for i in 0..n {
        for y in 0..6 {
            for x in 0..6 {
                px.extend_from_slice(&[i as u8, (10 * y + x) as u8, 0]);
            }
        }
    }
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let classes = InMemory::numbered_classes(&labels);
    Arc::new(InMemory::new("toy", px, labels, classes, (6, 6, 3)).unwrap())
}

fn cfg(batch_size: usize, order: Order, workers: usize, seed: u64) -> LoaderConfig {
    LoaderConfig { batch_size, order, drop_last: false, workers, prefetch: 2 * workers, seed }
}

/// Train transform with pre-crop = the image size (no resize): crops and flips are exact.
const CROP: Transform = Transform::Train { precrop: 6, crop: 4, flip: true };

#[test]
fn train_transform_crops_flips_and_is_keyed() {
    let ds = toy(1);
    let img = ds.load(0).unwrap();
    let mut flips = 0;
    let mut corners = std::collections::HashSet::new();
    for index in 0..200 {
        let out = CROP.apply(&img, 7, 0, index).unwrap();
        assert_eq!(out.len(), 3 * 16);
        // Green = 10·y + x of the source pixel, scaled to [−1, 1].
        let g = |y: usize, x: usize| ((out[16 + y * 4 + x] + 1.0) * 127.5).round() as i32;
        let (y0, x0) = (g(0, 0) / 10, g(0, 0) % 10);
        let mirrored = g(0, 1) < g(0, 0);
        flips += mirrored as usize;
        let left = if mirrored { x0 - 3 } else { x0 };
        corners.insert((y0, left));
        for y in 0..4 {
            for x in 0..4 {
                let sx = if mirrored { left + 3 - x as i32 } else { left + x as i32 };
                assert_eq!(g(y, x), 10 * (y0 + y as i32) + sx, "index {index}");
            }
        }
        assert!((0..=2).contains(&y0) && (0..=2).contains(&left));
        assert_eq!(out, CROP.apply(&img, 7, 0, index).unwrap(), "keyed by (seed, epoch, index)");
    }
    assert_eq!(corners.len(), 9, "all 3×3 crop offsets occur");
    assert!((70..130).contains(&flips), "{flips} flips of 200");
    assert_ne!(CROP.apply(&img, 7, 1, 0).unwrap(), CROP.apply(&img, 7, 2, 0).unwrap());
    let no_flip = Transform::Train { precrop: 6, crop: 6, flip: false };
    let out = no_flip.apply(&img, 0, 0, 0).unwrap();
    assert_eq!(out[36 + 1], (1.0 / 127.5 - 1.0) as f32);

    // HyperRule sizes: 6×6 → 160 → 128; eval → 128.
    let res = Resolution { precrop: 160, crop: 128 };
    assert_eq!(Transform::train(res).apply(&img, 0, 0, 0).unwrap().len(), 3 * 128 * 128);
    assert_eq!(Transform::eval(res).apply(&img, 0, 0, 0).unwrap().len(), 3 * 128 * 128);
    let bad = Transform::Train { precrop: 4, crop: 6, flip: true };
    assert!(bad.apply(&img, 0, 0, 0).is_err());
    assert!(CROP.apply_into(&img, 0, 0, 0, &mut [0.0; 5]).is_err());
}

fn collect(loader: &Loader, start: Position, end: Option<Position>) -> Vec<Batch> {
    loader.iter(start, end).unwrap().map(|b| b.unwrap()).collect()
}

fn same(a: &[Batch], b: &[Batch]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.position, &x.indices, &x.labels), (y.position, &y.indices, &y.labels));
        assert_eq!(x.images.to_vec::<f32>().unwrap(), y.images.to_vec::<f32>().unwrap());
    }
}

#[test]
fn every_example_once_seeded_orders_and_worker_independence() {
    let ds = toy(23);
    let one = Loader::new(ds.clone(), CROP, cfg(5, Order::Shuffle, 1, 3)).unwrap();
    let four = Loader::new(ds.clone(), CROP, cfg(5, Order::Shuffle, 4, 3)).unwrap();
    assert_eq!(one.batches_per_epoch(), 5);
    let end = Some(Position { epoch: 3, batch: 0 });
    let a = collect(&one, Position::default(), end);
    let b = collect(&four, Position::default(), end);
    same(&a, &b); // 1 and 4 workers: identical batches
    assert_eq!(a.len(), 15);
    for epoch in 0..3 {
        let batches: Vec<&Batch> = a.iter().filter(|b| b.position.epoch == epoch).collect();
        assert_eq!(batches.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), [5, 5, 5, 5, 3]);
        let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        assert_eq!(seen, one.epoch_order(epoch));
        seen.sort_unstable();
        assert_eq!(seen, (0..23).collect::<Vec<_>>(), "epoch {epoch}: every example once");
        for b in &batches {
            assert_eq!(b.images.dims(), [b.labels.len(), 3, 4, 4]);
            for (j, &i) in b.indices.iter().enumerate() {
                assert_eq!(b.labels[j], (i % 3) as i64);
                // Red channel carries the image number.
                let red = b.images.to_vec::<f32>().unwrap()[j * 48];
                assert_eq!(((red + 1.0) * 127.5).round() as usize, i);
            }
        }
    }
    assert_ne!(one.epoch_order(0), one.epoch_order(1), "a new order each epoch");
    let other = Loader::new(ds.clone(), CROP, cfg(5, Order::Shuffle, 2, 4)).unwrap();
    assert_ne!(one.epoch_order(0), other.epoch_order(0), "another seed, another order");
    let again = Loader::new(ds, CROP, cfg(5, Order::Shuffle, 3, 3)).unwrap();
    same(&a[..5], &collect(&again, Position::default(), Some(Position { epoch: 1, batch: 0 })));
}

#[test]
fn resume_drop_last_replacement_and_stop() {
    let ds = toy(23);
    let loader = Loader::new(ds.clone(), CROP, cfg(5, Order::Shuffle, 2, 11)).unwrap();
    let end = Some(Position { epoch: 2, batch: 0 });
    let all = collect(&loader, Position::default(), end);
    // Stop after 7 batches, remember the position, resume: the rest matches.
    let mut it = loader.iter(Position::default(), end).unwrap();
    for _ in 0..7 {
        it.next().unwrap().unwrap();
    }
    let pos = it.position();
    assert_eq!(pos, Position { epoch: 1, batch: 2 });
    drop(it);
    same(&all[7..], &collect(&loader, pos, end));
    assert_eq!(loader.advance(Position { epoch: 0, batch: 4 }, 6), Position { epoch: 2, batch: 0 });
    assert!(loader.iter(Position { epoch: 0, batch: 5 }, None).is_err());

    // drop_last: 4 full batches per epoch, the 3 leftover examples are not served.
    let dl = Loader::new(ds.clone(), CROP, LoaderConfig { drop_last: true, ..cfg(5, Order::Shuffle, 2, 11) }).unwrap();
    let e0 = collect(&dl, Position::default(), Some(Position { epoch: 1, batch: 0 }));
    assert_eq!(e0.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), [5, 5, 5, 5]);
    assert!(Loader::new(ds.clone(), CROP, LoaderConfig { drop_last: true, ..cfg(24, Order::Shuffle, 1, 0) }).is_err());

    // With replacement (few-shot smaller than a micro-batch): 12 draws per epoch.
    let wr = Loader::new(ds.clone(), CROP, cfg(8, Order::WithReplacement { samples: 12 }, 2, 1)).unwrap();
    let b = collect(&wr, Position::default(), Some(Position { epoch: 1, batch: 0 }));
    assert_eq!(b.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), [8, 4]);
    assert!(b.iter().flat_map(|b| b.indices.iter()).all(|&i| i < 23));

    // Sequential evaluation order; an endless stream stops cleanly when dropped (the test would
    // hang on a worker blocked on a full queue otherwise).
    let ev =
        Loader::new(ds.clone(), Transform::Eval { size: 6, resize: Resize::Direct }, LoaderConfig::eval(10)).unwrap();
    let idx: Vec<usize> = collect(&ev, Position::default(), Some(Position { epoch: 1, batch: 0 }))
        .iter()
        .flat_map(|b| b.indices.clone())
        .collect();
    assert_eq!(idx, (0..23).collect::<Vec<_>>());
    let mut endless = loader.iter(Position::default(), None).unwrap();
    for _ in 0..12 {
        endless.next().unwrap().unwrap();
    }
    drop(endless);

    let bench = bench_loader(&loader, 10).unwrap();
    assert_eq!((bench.batches, bench.images), (10, 46));
    assert!(bench.images_per_second > 0.0);
    assert!(Loader::new(ds, CROP, cfg(0, Order::Shuffle, 1, 0)).is_err());
}

/// Sharding as DistributedSampler: 23 examples over 4 ranks, padded (training) — 6 each, the
/// epoch's head repeated once, every example at least once and the union of the ranks' batch
/// k the whole loader's batch k with the same crops — and unpadded (evaluation) — 6, 6, 6, 5,
/// every example exactly once.
#[test]
fn shards_cover_the_epoch_with_the_same_crops() {
    let ds = toy(23);
    let whole = Loader::new(ds.clone(), CROP, cfg(8, Order::Shuffle, 1, 5)).unwrap();
    let order = whole.epoch_order(0);
    let shard = |rank, pad| {
        Loader::new(ds.clone(), CROP, cfg(2, Order::Shuffle, 1, 5))
            .unwrap()
            .sharded(Shard { rank, world: 4, pad })
            .unwrap()
    };
    let mut padded = Vec::new();
    for rank in 0..4 {
        let s = shard(rank, true);
        assert_eq!(s.epoch_len(), 6);
        let mine = s.epoch_order(0);
        // Rank r holds positions r, r+4, … of the order padded with its head.
        let expect: Vec<usize> =
            (0..6).map(|k| order.get(rank + 4 * k).copied().unwrap_or_else(|| order[rank + 4 * k - 23])).collect();
        assert_eq!(mine, expect);
        padded.extend(mine);
    }
    padded.sort_unstable();
    let mut want: Vec<usize> = (0..23).chain([order[0]]).collect();
    want.sort_unstable();
    assert_eq!(padded, want, "every example, plus one repeat of the epoch's first");
    // Batch 0 of 4 ranks × 2 = batch 0 of one loader of 8: the same examples and pixels.
    let first = collect(&whole, Position::default(), Some(Position { epoch: 0, batch: 1 })).remove(0);
    let mut rows: Vec<(usize, Vec<f32>)> = Vec::new();
    for rank in 0..4 {
        let b = collect(&shard(rank, true), Position::default(), Some(Position { epoch: 0, batch: 1 })).remove(0);
        let px = b.images.to_vec::<f32>().unwrap();
        rows.extend(b.indices.iter().enumerate().map(|(j, &i)| (i, px[j * 48..(j + 1) * 48].to_vec())));
    }
    let px = first.images.to_vec::<f32>().unwrap();
    let mut expect: Vec<(usize, Vec<f32>)> =
        first.indices.iter().enumerate().map(|(j, &i)| (i, px[j * 48..(j + 1) * 48].to_vec())).collect();
    rows.sort_by_key(|a| a.0);
    expect.sort_by_key(|a| a.0);
    assert_eq!(rows, expect);
    // Unpadded: 6, 6, 6, 5 and every example exactly once.
    let mut all = Vec::new();
    for rank in 0..4 {
        let s = shard(rank, false);
        assert_eq!(s.epoch_len(), if rank < 3 { 6 } else { 5 });
        all.extend(s.epoch_order(0));
    }
    all.sort_unstable();
    assert_eq!(all, (0..23).collect::<Vec<_>>());
    let err = Loader::new(toy(3), CROP, cfg(1, Order::Sequential, 1, 0))
        .unwrap()
        .sharded(Shard { rank: 3, world: 4, pad: false })
        .err()
        .unwrap();
    assert!(err.to_string().contains("leaves none to rank 3 of 4"), "{err}");
}
