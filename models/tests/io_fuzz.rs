//! Fuzzing both loaders with random bytes and with mutated valid files (bit flips, truncation,
//! inserted bytes): they must return `Ok` or an error, never panic, and never allocate more than
//! the input can justify. The last point is checked with a counting allocator that records the
//! largest single allocation made by the loading thread: a lying header that claims 10^12
//! elements would show up here as a multi-terabyte request (or an abort) long before any data
//! is read.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use bitgrad_models::io::{npz, safetensors, save_npz, save_safetensors};
use bitgrad_models::LoadOptions;
use common::*;
use proptest::prelude::*;

struct Counting;

thread_local! {
    /// Largest allocation request of this thread since the last reset. Per thread, so tests
    /// running in parallel do not disturb each other.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(n: usize) {
    let _ = LARGEST.try_with(|m| m.set(m.get().max(n)));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs a loader on `bytes` and returns the largest allocation it made.
fn largest_alloc(f: impl FnOnce()) -> usize {
    LARGEST.with(|m| m.set(0));
    f();
    LARGEST.with(|m| m.get())
}

/// JSON parsing turns a header of `L` bytes into values of up to ~32·L bytes (a list of one-digit
/// numbers), so a safetensors header may justify that much; tensors need at most `L` bytes.
fn safetensors_bound(len: usize) -> usize {
    64 * len + (64 << 10)
}

/// A deflated entry may expand 1032-fold, which the npz loader allows.
fn npz_bound(len: usize) -> usize {
    1100 * len + (1 << 20)
}

fn load_st(bytes: &[u8]) -> usize {
    largest_alloc(|| {
        let _ = safetensors::from_reader(
            &mut Cursor::new(bytes),
            bytes.len() as u64,
            Path::new("fuzz"),
            &LoadOptions::default(),
        );
    })
}

fn load_npz(bytes: &[u8]) -> usize {
    largest_alloc(|| {
        let _ = npz::from_reader(Cursor::new(bytes), bytes.len() as u64, Path::new("fuzz"), &LoadOptions::default());
    })
}

/// Made once per test binary (saving fsyncs; 500 cases should not).
fn valid_safetensors() -> Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(make_safetensors).clone()
}

fn make_safetensors() -> Vec<u8> {
    let dir = tmp_dir("fuzz-st");
    let mut sd = every_dtype();
    sd.metadata_mut().insert("arch".into(), "x".into());
    let p = dir.join("v.safetensors");
    save_safetensors(&p, &sd).unwrap();
    std::fs::read(p).unwrap()
}

fn valid_npz() -> Vec<u8> {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(make_npz).clone()
}

fn make_npz() -> Vec<u8> {
    let dir = tmp_dir("fuzz-npz");
    let p = dir.join("v.npz");
    save_npz(&p, &every_dtype()).unwrap();
    std::fs::read(p).unwrap()
}

fn deflated_npz() -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/npz/numpy_deflated.npz")).unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Overwrite 8 bytes with a (possibly huge) little-endian number: lengths, sizes, offsets.
    Number(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), prop_oneof![any::<u64>(), 0..4096u64]).prop_map(|(i, n)| Mutation::Number(i, n)),
    ]
}

fn mutate(mut b: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if b.is_empty() {
            break;
        }
        let n = b.len();
        match m {
            Mutation::Flip(i, x) => b[i % n] ^= x,
            Mutation::Truncate(i) => b.truncate(i % n),
            Mutation::Insert(i, x) => {
                let at = i % (n + 1);
                b.splice(at..at, x.iter().copied());
            }
            Mutation::Number(i, v) => {
                let at = i % n;
                let end = (at + 8).min(n);
                b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn safetensors_random_bytes(mut b in prop::collection::vec(any::<u8>(), 0..256), hlen in 0..256u64) {
        // Half the cases get a plausible header length so parsing goes past the first check.
        if b.len() >= 8 && hlen % 2 == 0 {
            let n = hlen % (b.len() as u64 - 7);
            b[..8].copy_from_slice(&n.to_le_bytes());
        }
        let most = load_st(&b);
        prop_assert!(most <= safetensors_bound(b.len()), "allocated {most} for {} bytes", b.len());
    }

    #[test]
    fn safetensors_mutated(ms in prop::collection::vec(mutation(), 1..6)) {
        let b = mutate(valid_safetensors(), &ms);
        let most = load_st(&b);
        prop_assert!(most <= safetensors_bound(b.len()), "allocated {most} for {} bytes", b.len());
    }

    #[test]
    fn npz_random_bytes(mut b in prop::collection::vec(any::<u8>(), 0..512), zip_magic in any::<bool>()) {
        if zip_magic && b.len() >= 4 {
            b[..4].copy_from_slice(b"PK\x03\x04");
        }
        let most = load_npz(&b);
        prop_assert!(most <= npz_bound(b.len()), "allocated {most} for {} bytes", b.len());
    }

    #[test]
    fn npz_mutated(ms in prop::collection::vec(mutation(), 1..6), deflated in any::<bool>()) {
        let base = if deflated { deflated_npz() } else { valid_npz() };
        let b = mutate(base, &ms);
        let most = load_npz(&b);
        prop_assert!(most <= npz_bound(b.len()), "allocated {most} for {} bytes", b.len());
    }
}

/// The unmutated files load, so the mutations start from something that passes every check.
#[test]
fn the_fuzzed_files_are_valid() {
    let st = valid_safetensors();
    assert!(
        safetensors::from_reader(Cursor::new(&st), st.len() as u64, Path::new("v"), &LoadOptions::default()).is_ok()
    );
    for z in [valid_npz(), deflated_npz()] {
        assert!(npz::from_reader(Cursor::new(&z), z.len() as u64, Path::new("v"), &LoadOptions::default()).is_ok());
    }
}

/// The allocation probe sees allocations (else every bound above would pass vacuously).
#[test]
fn the_probe_sees_allocations() {
    let most = largest_alloc(|| {
        std::hint::black_box(vec![1u8; 3 << 20]);
    });
    assert!(most >= 3 << 20, "{most}");
}
