//! __half / __nv_bfloat16 conversions in the emulator are bit-identical to the `half` crate.

mod common;

use bitgrad_kernels::emu::Modes;
use common::*;
use half::{bf16, f16};

fn launch_1d(kernel: &str, input: &bitgrad_kernels::emu::Buffer, output: &bitgrad_kernels::emu::Buffer, n: usize) {
    let blocks = n.div_ceil(256) as u32;
    run(kernel, [blocks, 1, 1], [256, 1, 1], 0, &[ptr(input), ptr(output), arg(&(n as i32))], &Modes::FAST).unwrap();
}

#[test]
fn all_16_bit_patterns_to_f32() {
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let input = upload(&bits, &Modes::FAST);
    let out = filled(bits.len(), 0f32, &Modes::FAST);
    launch_1d("selftest_f16_to_f32", &input, &out, bits.len());
    for (b, got) in bits.iter().zip(download::<f32>(&out)) {
        assert_eq!(got.to_bits(), f16::from_bits(*b).to_f32().to_bits(), "f16 {b:#06x}");
    }
    launch_1d("selftest_bf16_to_f32", &input, &out, bits.len());
    for (b, got) in bits.iter().zip(download::<f32>(&out)) {
        assert_eq!(got.to_bits(), bf16::from_bits(*b).to_f32().to_bits(), "bf16 {b:#06x}");
    }
}

/// Edge cases around every rounding boundary, plus a few million pseudo-random bit patterns.
fn test_floats() -> Vec<f32> {
    let mut v: Vec<u32> = vec![0, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0x7F80_0001, 0xFFBF_FFFF, 1];
    for h in 0..=u16::MAX as u32 {
        let f = f16::from_bits(h as u16).to_f32().to_bits();
        let b = h << 16;
        for base in [f, b] {
            v.extend([base.wrapping_sub(1), base, base.wrapping_add(1), base | 0x1000, base | 0x0FFF, base | 0x8000]);
        }
    }
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..3_000_000 {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.push((s >> 16) as u32);
    }
    v.into_iter().map(f32::from_bits).collect()
}

#[test]
fn f32_to_16_bit_rounds_like_the_half_crate() {
    let x = test_floats();
    let input = upload(&x, &Modes::FAST);
    let out = filled(x.len(), 0u16, &Modes::FAST);
    launch_1d("selftest_f32_to_f16", &input, &out, x.len());
    for (f, got) in x.iter().zip(download::<u16>(&out)) {
        assert_eq!(got, f16::from_f32(*f).to_bits(), "f16 of {:#010x}", f.to_bits());
    }
    launch_1d("selftest_f32_to_bf16", &input, &out, x.len());
    for (f, got) in x.iter().zip(download::<u16>(&out)) {
        assert_eq!(got, bf16::from_f32(*f).to_bits(), "bf16 of {:#010x}", f.to_bits());
    }
}

#[test]
fn half_and_bf16_arrays_as_kernel_types() {
    let x: Vec<f16> = (0..1000).map(|i| f16::from_f32(i as f32 * 0.37 - 100.0)).collect();
    let input = upload(&x, &Modes::CHECKED);
    let out = filled(x.len(), bf16::ZERO, &Modes::CHECKED);
    let blocks = x.len().div_ceil(256) as u32;
    run(
        "selftest_half_to_bf16x2",
        [blocks, 1, 1],
        [256, 1, 1],
        0,
        &[ptr(&input), ptr(&out), arg(&1000i32)],
        &Modes::CHECKED,
    )
    .unwrap();
    let expect: Vec<bf16> = x.iter().map(|h| bf16::from_f32(2.0 * h.to_f32())).collect();
    assert_eq!(download::<bf16>(&out), expect);
}
