//! The normalization study runner on a minimal grid (2 norms × 2 batch sizes × 1 seed, a few
//! steps) on the shipped data: it completes, and its table, CSV and plot are well-formed.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bitgrad_models::data::{open_idx_dir, shots, Dataset};
use bitgrad_models::study::{NormStudy, COLORS};

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../assets/demo")
}

#[test]
fn minimal_grid_writes_a_well_formed_table_and_plot() {
    let started = Instant::now();
    let train: Arc<dyn Dataset> = Arc::new(open_idx_dir(shipped(), true).unwrap());
    // 20 test images per class keep the four evaluations short.
    let test: Arc<dyn Dataset> = Arc::new(shots(Arc::new(open_idx_dir(shipped(), false).unwrap()), 20, 0).unwrap());
    let study = NormStudy {
        batch_sizes: vec![4, 8],
        norms: vec!["gn_ws".into(), "bn".into()],
        steps: 3,
        seeds: 1,
        workers: 1,
        ..NormStudy::default()
    };
    let mut seen = Vec::new();
    let result =
        study.run(train, test, |done, total, run| seen.push((done, total, run.norm.clone(), run.batch))).unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[3].0, 4);
    assert_eq!(seen[0].1, 4);
    // Equal examples: batch 4 trains twice the steps of batch 8.
    let steps: Vec<u64> = result.runs.iter().map(|r| r.steps).collect();
    assert_eq!(steps, vec![6, 3, 6, 3]);

    let dir = std::env::temp_dir().join(format!("bitgrad-norm-study-{}", std::process::id()));
    let paths = result.write(&dir).unwrap();
    assert_eq!(paths.len(), 4);

    let csv = std::fs::read_to_string(dir.join("table.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header, ["norm", "batch", "steps", "lr", "seeds", "top1_mean", "top1_std", "images_per_second"]);
    let mut cells = BTreeSet::new();
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), header.len(), "{line}");
        assert!(f.iter().all(|c| !c.is_empty()), "{line}");
        let num = |i: usize| f[i].parse::<f64>().unwrap_or_else(|e| panic!("{line}: column {i}: {e}"));
        assert!((0.0..=1.0).contains(&num(5)), "top-1 {line}");
        assert_eq!(num(6), 0.0, "one seed has no spread: {line}");
        assert!(num(7) > 0.0, "img/s {line}");
        assert_eq!(num(4), 1.0);
        cells.insert((f[0].to_string(), f[1].parse::<usize>().unwrap()));
    }
    let want: BTreeSet<_> = [("bn", 4), ("bn", 8), ("gn_ws", 4), ("gn_ws", 8)].map(|(n, b)| (n.to_string(), b)).into();
    assert_eq!(cells, want);

    let md = std::fs::read_to_string(dir.join("table.md")).unwrap();
    assert!(md.contains("| gn_ws | blue |") && md.contains("| bn | red |"), "{md}");
    assert_eq!(std::fs::read_to_string(dir.join("runs.csv")).unwrap().lines().count(), 5);

    // The plot decodes, and each norm's colour is drawn.
    let png = image::open(dir.join("accuracy.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (800, 500));
    for (name, (r, g, b)) in &COLORS[..2] {
        assert!(png.pixels().any(|p| p.0 == [*r, *g, *b]), "no {name} pixel in the plot");
    }
    // Text: the title across the top band and the batch-size ticks under the plot are dark
    // glyph pixels on white.
    let dark = |rows: std::ops::Range<u32>| {
        rows.flat_map(|y| (100..700).map(move |x| (x, y)))
            .filter(|&(x, y)| png.get_pixel(x, y).0.iter().all(|&c| c < 100))
            .count()
    };
    assert!(dark(0..30) > 40, "no title in the plot");
    assert!(dark(440..500) > 40, "no axis text in the plot");
    std::fs::remove_dir_all(&dir).ok();
    eprintln!("minimal study grid: {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn a_bad_grid_fails_before_training() {
    let train: Arc<dyn Dataset> = Arc::new(open_idx_dir(shipped(), true).unwrap());
    for study in [
        NormStudy { norms: vec!["gn".into(), "frn".into()], ..NormStudy::default() },
        NormStudy { batch_sizes: vec![4, 0], ..NormStudy::default() },
        NormStudy { seeds: 0, ..NormStudy::default() },
        NormStudy { lr: f64::NAN, ..NormStudy::default() },
    ] {
        let started = Instant::now();
        let err = study.run(train.clone(), train.clone(), |_, _, _| panic!("a run started")).unwrap_err();
        assert!(started.elapsed().as_secs_f64() < 1.0, "{err}");
    }
}
