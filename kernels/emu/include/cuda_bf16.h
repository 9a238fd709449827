// cuda_bf16.h shim for the CPU emulator: the types and conversions live in emu_half.h, which
// cuda_emu.h (force-included in front of every kernel) already provides.
#pragma once
#include "../cuda_emu.h"
