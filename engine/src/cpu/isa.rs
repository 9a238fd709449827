//! Which instruction set each CPU kernel family runs with, and how to force a lower one.
//!
//! bitgrad's own kernels (the direct convolution's micro-kernels, group norm, weight
//! standardization, SGD) exist in per-ISA instantiations of one code base and pick one at run
//! time from [`active`]: the best level the CPU has, lowered by `BITGRAD_CPU_ISA` (or
//! [`force`]) so that every level the machine has can be tested and timed against the others.
//!
//! Levels on x86-64, lowest first: `scalar` (plain Rust, any CPU), `avx2` (AVX2 + FMA), `avx512`
//! (AVX-512 F/BW/DQ/VL), `avx512bf16` (AVX-512 plus the bf16 dot product `vdpbf16ps`: Zen 4,
//! Cooper Lake), `amx` (AVX512-BF16 plus AMX-BF16 tiles: Sapphire Rapids and later, which all
//! have AVX512-BF16). Only the bf16 convolutions tell the two top levels from `avx512`.
//!
//! On aarch64 the levels are `scalar` and `neon`. NEON is part of the aarch64 baseline, so every
//! aarch64 build compiles its plain-Rust loops (elementwise, group norm, WS, SGD) with NEON
//! vectors already; the `neon` level adds the direct convolution's hand-written NEON
//! micro-kernels, and `scalar` runs that convolution on its portable 8-lane arrays instead.
//!
//! A level above what the CPU has, or of another architecture, cannot be forced: [`parse_forced`]
//! says why, and the library falls back to the detected level with one warning on stderr (the
//! CLI refuses to start instead).
//!
//! The `gemm` crate, which multiplies the 1×1 convolutions, the im2col columns and the linear
//! layers, makes its own choice (AVX-512 when the CPU has AVX-512F, else AVX2+FMA, else scalar)
//! and cannot be told otherwise; [`Family::Gemm`] reports that choice, and a forced level below
//! it is reported as not applying there.
//!
//! Each kernel family records the level it last ran with ([`record`]), so benchmarks print what
//! actually ran, not what the CPU could do.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// An instruction-set level, ordered from lowest to highest.
///
/// `Neon` (aarch64) sorts between `Scalar` and `Avx2` only so that a family's level can be taken
/// as `active().min(top)` on either architecture: levels of two architectures never meet on one
/// machine ([`Isa::available`] holds only this machine's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar = 1,
    Neon = 2,
    Avx2 = 3,
    Avx512 = 4,
    Avx512Bf16 = 5,
    Amx = 6,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 6] = [Isa::Scalar, Isa::Neon, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16, Isa::Amx];

    /// The name `BITGRAD_CPU_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Neon => "neon",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    fn from_u8(v: u8) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| *i as u8 == v)
    }

    /// Whether this level belongs to the architecture bitgrad was built for (`scalar` belongs
    /// to all).
    pub fn of_this_arch(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Neon => cfg!(target_arch = "aarch64"),
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => cfg!(target_arch = "x86_64"),
        }
    }

    /// The levels this CPU has, lowest first (always at least `scalar`).
    pub fn available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.of_this_arch() && *i <= detected()).collect()
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The highest level this CPU supports.
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Isa {
    use std::arch::is_x86_feature_detected as has;
    let avx512 = has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("fma");
    let avx512_bf16 = avx512 && has!("avx512bf16");
    if avx512_bf16 && amx_usable() {
        Isa::Amx
    } else if avx512_bf16 {
        Isa::Avx512Bf16
    } else if avx512 {
        Isa::Avx512
    } else if has!("avx2") && has!("fma") {
        Isa::Avx2
    } else {
        Isa::Scalar
    }
}

/// NEON (Advanced SIMD) is mandatory on aarch64 Linux; the check only guards odd targets.
#[cfg(target_arch = "aarch64")]
fn detect() -> Isa {
    if std::arch::is_aarch64_feature_detected!("neon") {
        Isa::Neon
    } else {
        Isa::Scalar
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Isa {
    Isa::Scalar
}

/// Whether AMX-BF16 is present and the kernel grants this process the tile state. Linux hands
/// out AMX's 8 KiB of register state only on request (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); a
/// CPU with AMX whose kernel refuses counts as AVX-512.
#[cfg(target_arch = "x86_64")]
fn amx_usable() -> bool {
    // CPUID leaf 7 sub-leaf 0, EDX bit 22 = AMX-BF16 (std's detector has no stable name for it).
    let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
    if leaf7.edx & (1 << 22) == 0 {
        return false;
    }
    request_amx_state()
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_amx_state() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments; it only changes this process's permissions.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_amx_state() -> bool {
    false
}

/// The level the `gemm` crate picks on this CPU: its AVX-512 kernels need only AVX-512F (it is
/// built with its `x86-v4` feature), its AVX2 ones FMA; on aarch64 it has NEON kernels.
pub fn gemm_crate_level() -> Isa {
    static LEVEL: OnceLock<Isa> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("avx512f") {
                return Isa::Avx512;
            }
            if has!("fma") {
                return Isa::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
        Isa::Scalar
    })
}

/// Notes a `gemm` crate call for the report.
pub fn record_gemm() {
    record(Family::Gemm, gemm_crate_level());
}

/// Parses a `BITGRAD_CPU_ISA` value against this CPU: the level, or why it cannot be used.
pub fn parse_forced(value: &str) -> Result<Isa, String> {
    let v = value.trim().to_ascii_lowercase();
    let isa = Isa::ALL.into_iter().find(|i| i.name() == v).ok_or_else(|| {
        format!("BITGRAD_CPU_ISA={value:?} is not a level: use one of scalar, neon, avx2, avx512, avx512bf16, amx")
    })?;
    if !isa.of_this_arch() {
        return Err(format!(
            "BITGRAD_CPU_ISA={value} is a level of another architecture: this CPU has {}",
            levels_text(&Isa::available())
        ));
    }
    if isa > detected() {
        return Err(format!(
            "BITGRAD_CPU_ISA={value} asks for more than this CPU has (it supports up to {})",
            detected()
        ));
    }
    Ok(isa)
}

/// 0 = not forced by [`force`]; else an `Isa` as u8.
static FORCED: AtomicU8 = AtomicU8::new(0);

/// The level `BITGRAD_CPU_ISA` asks for, read once.
fn env_level() -> Option<Isa> {
    static ENV: OnceLock<Option<Isa>> = OnceLock::new();
    *ENV.get_or_init(|| {
        let value = std::env::var("BITGRAD_CPU_ISA").ok().filter(|v| !v.trim().is_empty())?;
        match parse_forced(&value) {
            Ok(isa) => Some(isa),
            Err(why) => {
                eprintln!("bitgrad: {why}; using {}", detected());
                None
            }
        }
    })
}

/// The level bitgrad's own kernels run with now: the forced one if any, else the detected one.
pub fn active() -> Isa {
    match Isa::from_u8(FORCED.load(Ordering::Relaxed)) {
        Some(isa) => isa,
        None => env_level().unwrap_or_else(detected),
    }
}

/// Forces a level for the whole process (tests and benchmarks that compare levels), or returns
/// to `BITGRAD_CPU_ISA`/detection with `None`. Refuses a level the CPU does not have.
pub fn force(isa: Option<Isa>) -> Result<(), String> {
    match isa {
        Some(i) if i > detected() || !i.of_this_arch() => {
            Err(format!("this CPU has {}, not {i}", levels_text(&Isa::available())))
        }
        Some(i) => {
            FORCED.store(i as u8, Ordering::Relaxed);
            Ok(())
        }
        None => {
            FORCED.store(0, Ordering::Relaxed);
            Ok(())
        }
    }
}

/// The CPU kernel families whose instruction set is reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// The direct (BRGEMM) convolution micro-kernels.
    ConvDirect,
    /// The `gemm` crate's GEMMs: 1×1 and im2col convolutions, linear layers, matmul.
    Gemm,
    /// Group norm forward and backward.
    GroupNorm,
    /// Weight standardization.
    WeightStd,
    /// SGD with momentum.
    Sgd,
    /// The bf16 convolutions (`--precision bf16`) on AMX tiles or on AVX512-BF16's
    /// `vdpbf16ps`; below `avx512bf16`, bf16 convolutions compute on the f32 kernels above.
    ConvBf16,
    /// The engine's elementwise maps (unary, binary, bf16 arithmetic) on contiguous runs.
    Elementwise,
}

impl Family {
    pub const ALL: [Family; 7] = [
        Family::ConvDirect,
        Family::Gemm,
        Family::GroupNorm,
        Family::WeightStd,
        Family::Sgd,
        Family::ConvBf16,
        Family::Elementwise,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Family::ConvDirect => "conv (direct)",
            Family::Gemm => "gemm",
            Family::GroupNorm => "group norm",
            Family::WeightStd => "weight std",
            Family::Sgd => "sgd",
            Family::ConvBf16 => "conv (bf16)",
            Family::Elementwise => "elementwise",
        }
    }

    /// The highest level this family has kernels for on x86-64. On aarch64 every family's level
    /// is at most `neon`, which sorts below all of these.
    pub fn top(self) -> Isa {
        match self {
            // The f32 kernels have nothing to gain from the bf16 instructions.
            Family::ConvDirect | Family::Elementwise => Isa::Avx512,
            Family::Gemm => Isa::Avx512,
            Family::GroupNorm | Family::WeightStd | Family::Sgd => Isa::Avx2,
            Family::ConvBf16 => Isa::Amx,
        }
    }

    /// The level this family runs with now. The `gemm` crate ignores forcing (see the module
    /// docs), so its line is the detected level.
    pub fn planned(self) -> Isa {
        match self {
            Family::Gemm => gemm_crate_level(),
            _ => active().min(self.top()),
        }
    }

    /// What [`report`] prints for a family that has not run: its planned level, or for the bf16
    /// convolutions below `avx512bf16`, that they would compute on the f32 kernels.
    fn planned_text(self) -> String {
        match self {
            Family::ConvBf16 if active() < Isa::Avx512Bf16 => "f32 kernels".to_string(),
            _ => self.planned().name().to_string(),
        }
    }
}

/// Per family, a bit per level that ran since the start (or [`reset`]): bit `isa as u8`.
static RAN: [AtomicU8; Family::ALL.len()] = [const { AtomicU8::new(0) }; Family::ALL.len()];

/// Notes that `family` just ran with `isa`.
pub fn record(family: Family, isa: Isa) {
    RAN[family as usize].fetch_or(1 << (isa as u8), Ordering::Relaxed);
}

/// The levels `family` ran with since the process started (or since [`reset`]), highest first
/// (a family can use several: the direct convolution takes AVX2's 8 lanes for narrow rows on
/// an AVX-512 machine).
pub fn ran(family: Family) -> Vec<Isa> {
    let bits = RAN[family as usize].load(Ordering::Relaxed);
    Isa::ALL.into_iter().rev().filter(|i| bits & (1 << (*i as u8)) != 0).collect()
}

/// The highest level `family` ran with, if it ran.
pub fn last(family: Family) -> Option<Isa> {
    ran(family).first().copied()
}

/// Forgets what ran (a benchmark calls this before the runs it reports).
pub fn reset() {
    RAN.iter().for_each(|l| l.store(0, Ordering::Relaxed));
}

fn levels_text(levels: &[Isa]) -> String {
    levels.iter().map(|i| i.name()).collect::<Vec<_>>().join("+")
}

/// One line per family: what it ran with (or would run with, marked "planned").
pub fn report() -> String {
    let mut s = String::new();
    for f in Family::ALL {
        let (levels, how) = match ran(f) {
            v if !v.is_empty() => (levels_text(&v), "ran"),
            _ => (f.planned_text(), "planned"),
        };
        s += &format!("{:<14} {levels} ({how})\n", f.name());
    }
    s
}

/// The report on one line, `family=isa, …` (benchmark headers).
pub fn report_line() -> String {
    Family::ALL
        .iter()
        .map(|&f| match ran(f) {
            v if !v.is_empty() => format!("{}={}", f.name(), levels_text(&v)),
            _ => format!("{}={} (planned)", f.name(), f.planned_text()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_rejects_unknown_too_high_and_foreign_levels() {
        assert!(parse_forced("sse9").unwrap_err().contains("not a level"));
        assert_eq!(parse_forced(" Scalar "), Ok(Isa::Scalar));
        if cfg!(target_arch = "x86_64") && detected() < Isa::Amx {
            assert!(parse_forced("amx").unwrap_err().contains("supports up to"));
        }
        let foreign = if cfg!(target_arch = "aarch64") { "avx2" } else { "neon" };
        assert!(parse_forced(foreign).unwrap_err().contains("another architecture"));
        let foreign = if cfg!(target_arch = "aarch64") { Isa::Avx2 } else { Isa::Neon };
        assert!(force(Some(foreign)).is_err());
        assert_eq!(active(), env_level().unwrap_or_else(detected), "a refused level changes nothing");
    }

    #[test]
    fn every_level_a_family_ran_with_is_reported() {
        record(Family::ConvDirect, Isa::Avx2);
        record(Family::ConvDirect, Isa::Scalar);
        assert_eq!(ran(Family::ConvDirect)[..2], [Isa::Avx2, Isa::Scalar]);
        // Nothing else in this test binary runs a convolution.
        assert!(report_line().contains("conv (direct)=avx2+scalar"), "{}", report_line());
    }

    #[test]
    fn available_levels_are_this_architectures_up_to_the_detected_one() {
        let av = Isa::available();
        assert_eq!(av[0], Isa::Scalar);
        assert_eq!(*av.last().unwrap(), detected());
        let arch: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.of_this_arch()).collect();
        assert_eq!(av, arch[..av.len()], "a prefix of this architecture's levels");
        if cfg!(target_arch = "aarch64") {
            assert_eq!(detected(), Isa::Neon, "NEON is part of aarch64 Linux's baseline");
        }
    }
}
