// cuda_emu.h — the CUDA device environment, emulated on the CPU.
//
// build.rs force-includes this header (-include) in front of every .cu it compiles as C++. It
// defines the CUDA built-ins a kernel may use; anything CUDA offers that is missing here must
// fail to compile rather than silently behave differently. The runtime behind the declarations
// lives in runtime.cpp (scheduler, fibers, barriers, warp ops).
//
// Two modes:
//   BITGRAD_EMU_SCAN — build.rs preprocesses each .cu with this defined, to find the entry points
//                      after macro expansion: `__global__` becomes a marker token, nothing else is
//                      included (the output is only scanned, never compiled).
//   otherwise        — the full emulation.
#pragma once

#ifdef BITGRAD_EMU_SCAN

#define __global__ __bitgrad_emu_entry__
#define __device__
#define __host__
#define __forceinline__
#define __noinline__
#define __launch_bounds__(...)
#define __shared__
#define __constant__
#define DYNAMIC_SHARED(T, name)

#else // full emulation

// System headers first: the CUDA keyword macros below (e.g. __noinline__) would break them.
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

#define BITGRAD_EMU 1

// ---- declaration specifiers -----------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
// Static shared memory is per block: every thread of a block runs on one OS thread, and an OS
// thread runs its blocks one after another, so a thread_local is exactly one block's copy.
#define __shared__ static thread_local
// Read-only data initialised in the source (host-side cudaMemcpyToSymbol is not emulated).
#define __constant__ static const
// `__restrict__` is a GCC keyword already.

#include "emu_types.h"
#include "emu_state.h"
#include "emu_half.h"
#include "emu_math.h"
#include "emu_sync.h"
#include "emu_tensor.h"

#endif // BITGRAD_EMU_SCAN
