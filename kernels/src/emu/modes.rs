//! Which checks a launch runs with.

/// Checking modes of a launch. Deadlock and divergent-barrier detection is always on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modes {
    /// Resume runnable threads in a seeded random order (per block and launch) instead of
    /// thread-index order, to expose missing `__syncthreads()`.
    pub shuffle: bool,
    /// Allocate buffers with a guard page right after their end (see [`super::alloc`]). Also
    /// fills fresh guarded buffers with 0xFF bytes, as `cudaMalloc` memory is not zeroed either.
    pub guard: bool,
    /// Seed of the `shuffle` order.
    pub seed: u64,
}

const DEFAULT_SEED: u64 = 0x5EED_B17D_u64;

impl Modes {
    /// No extra checks: threads run in index order, buffers are plain.
    pub const FAST: Modes = Modes { shuffle: false, guard: false, seed: DEFAULT_SEED };
    /// Every check.
    pub const CHECKED: Modes = Modes { shuffle: true, guard: true, seed: DEFAULT_SEED };

    /// From `BITGRAD_EMU` (`fast`, `checked`, or a comma list of `shuffle`/`guard`; default
    /// `checked`) and `BITGRAD_EMU_SEED` (a u64). Unknown words are reported on stderr and
    /// ignored, so a typo never silently turns checks off without a trace.
    pub fn from_env() -> Modes {
        let seed = std::env::var("BITGRAD_EMU_SEED").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(DEFAULT_SEED);
        let spec = std::env::var("BITGRAD_EMU").unwrap_or_default();
        Modes { seed, ..Modes::parse(&spec) }
    }

    /// Parses a `BITGRAD_EMU` value (see [`Modes::from_env`]); the seed is the default one.
    pub fn parse(spec: &str) -> Modes {
        let spec = spec.trim();
        if spec.is_empty() {
            return Modes::CHECKED;
        }
        let mut modes = Modes { shuffle: false, guard: false, seed: DEFAULT_SEED };
        for word in spec.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "fast" => {}
                "checked" => modes = Modes::CHECKED,
                "shuffle" => modes.shuffle = true,
                "guard" => modes.guard = true,
                other => {
                    eprintln!("bitgrad: ignoring unknown BITGRAD_EMU word {other:?} (fast, checked, shuffle, guard)")
                }
            }
        }
        modes
    }
}

impl Default for Modes {
    fn default() -> Self {
        Modes::CHECKED
    }
}
