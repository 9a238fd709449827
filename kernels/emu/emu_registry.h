// emu_registry.h — the kernel table build.rs generates: one entry per `extern "C" __global__`
// function, with a trampoline that unpacks cuLaunchKernel-style `void** args` and the size and
// alignment of every parameter (taken from the function's type, so build.rs never has to parse
// parameter declarations). The layout of KernelEntry is mirrored in src/emu/ffi.rs.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <type_traits>
#include <utility>

namespace emu {

using Trampoline = void (*)(void* const* args);

struct KernelEntry {
    const char* name;
    Trampoline tramp;
    uint32_t n_params;
    const uint32_t* sizes;  // n_params entries
    const uint32_t* aligns; // n_params entries
};

struct KernelTable {
    const KernelEntry* entries;
    size_t count;
};

template <auto F>
struct Entry;

template <class... A, void (*F)(A...)>
struct Entry<F> {
    template <size_t... I>
    static void call(void* const* args, std::index_sequence<I...>) {
        F(*static_cast<std::decay_t<A>*>(args[I])...);
    }
    static void tramp(void* const* args) { call(args, std::index_sequence_for<A...>{}); }
    // One extra element so that zero-parameter kernels still get a valid array.
    static constexpr uint32_t sizes[] = {(uint32_t)sizeof(std::decay_t<A>)..., 0};
    static constexpr uint32_t aligns[] = {(uint32_t)alignof(std::decay_t<A>)..., 0};
    static constexpr KernelEntry make(const char* name) {
        return KernelEntry{name, &tramp, (uint32_t)sizeof...(A), sizes, aligns};
    }
};

} // namespace emu

#define EMU_KERNEL_ENTRY(NS, NAME) ::emu::Entry<&NS::NAME>::make(#NAME)
