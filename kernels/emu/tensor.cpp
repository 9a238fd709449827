// tensor.cpp — the tensor-core instructions on the emulator: mma.sync m16n8k16 (bf16 and f16 in,
// f32 accumulators), ldmatrix m8n8 (x1/x2/x4, optionally .trans) and cp.async with its groups.
//
// mma and ldmatrix are warp collectives (`.sync.aligned`): every lane of the warp must reach the
// same call site; the last lane to arrive computes all 32 lanes' results from the operands the
// others left on their (parked) fiber stacks. A lane that exited, waits at a barrier, or waits at
// another collective or call site makes the warp diverged, which PTX leaves undefined: an error.
//
// Fragment layouts follow the PTX ISA's tables ("Matrix Fragments for mma.m16n8k16 with floating
// point type", "ldmatrix"), with g = lane / 4 and t = lane % 4, and the first-listed element of a
// packed pair in the low 16 bits.
//
// Numerics: each product a·b is computed in f32, which is exact for bf16·bf16 (8 × 8 significant
// bits) and f16·f16 (11 × 11) unless the f32 exponent range overflows or underflows. The sum is
// plain IEEE f32, round to nearest even, in one fixed order:
//     d = ((c + p_0) + p_1) + … + p_15,   p_k = A[row][k] · B[k][col].
// Hardware sums blocks of products with truncated alignment (not reproduced; docs/kernels.md), so
// the emulator matches a CPU twin that uses this order bit for bit, and a GPU within a tolerance.
//
// cp.async: a copy reads its source when issued and writes its destination at a later point:
// at the covering cp.async.wait_group in `fast` mode; in `shuffle` mode at a random point between
// issue and that wait (at one of the issuing thread's later cp.async/ldmatrix/mma calls). Until it
// lands the destination holds a poison pattern (0xFF bytes: NaN as f32, bf16 and f16). A shadow
// word per 4 bytes of dynamic shared memory tracks each copy's destination through
//     PENDING (issued, not landed) → LANDED (not yet waited for) → WAITED (visible to the issuing
//     thread only) → published (by the next __syncthreads: the shadow word is cleared),
// and ldmatrix refuses to read bytes that are not published: a missing wait_group or a missing
// __syncthreads is an error naming the kernel line, whatever the thread order. Only DYNAMIC_SHARED
// memory is tracked, so cp.async destinations and ldmatrix rows must lie in it.
#include "runtime.h"

#include <stdio.h>
#include <string.h>

#include <type_traits>

#include "emu_half.h" // the exact bf16/f16 → f32 conversions

namespace emu {

// ---- shadow state of dynamic shared memory ------------------------------------------------

enum ShadowState : uint32_t { SH_PENDING = 1, SH_LANDED = 2, SH_WAITED = 3 };
static inline uint32_t shadow_word(uint32_t state, uint32_t owner) { return state << 16 | owner; }
static inline uint32_t shadow_state(uint32_t word) { return word >> 16; }
static inline uint32_t shadow_owner(uint32_t word) { return word & 0xFFFF; }

void tc_block_start(Worker& w, size_t shared_bytes) {
    // Most kernels never use cp.async: clear the shadow only after a block that did.
    if (w.shadow_dirty || w.shadow.size() != shared_bytes / 4) w.shadow.assign(shared_bytes / 4, 0);
    w.shadow_dirty = false;
    w.waited.clear();
    w.copy_rng = w.rng ^ 0xA5A5A5A5DEADBEEFull;
}

void tc_barrier_released(Worker& w) {
    for (uint32_t i : w.waited) {
        if (shadow_state(w.shadow[i]) == SH_WAITED) w.shadow[i] = 0;
    }
    w.waited.clear();
}

// The word index of `p` in dynamic shared memory if [p, p + bytes) lies inside it, else -1.
static long shared_word(const Worker& w, const void* p, size_t bytes) {
    const char* c = (const char*)p;
    size_t size = w.launch->shared_bytes;
    if (c < w.shared || c + bytes > w.shared + size) return -1;
    return (long)((c - w.shared) / 4);
}

// "file:line" in one of a few rotating buffers, so that one message can name two sites.
static const char* site(const char* file, int line) {
    static thread_local char bufs[4][160];
    static thread_local int next = 0;
    char* buf = bufs[next++ & 3];
    snprintf(buf, sizeof bufs[0], "%s:%d", file ? file : "?", line);
    return buf;
}

static void thread_name(const Worker& w, uint32_t linear, char* out, size_t cap) {
    const uint3& t = w.threads[linear].tid;
    snprintf(out, cap, "(%u,%u,%u)", t.x, t.y, t.z);
}

// ---- cp.async -------------------------------------------------------------------------------

static void land(Worker& w, AsyncCopy& c) {
    memcpy(c.dst, c.data, c.bytes);
    c.landed = true;
    long i = (c.dst - w.shared) / 4;
    uint32_t owner = w.cur->linear;
    for (uint32_t k = 0; k < c.bytes / 4; k++) w.shadow[i + k] = shadow_word(SH_LANDED, owner);
}

static uint64_t next_rand(Worker& w) {
    w.copy_rng ^= w.copy_rng >> 12, w.copy_rng ^= w.copy_rng << 25, w.copy_rng ^= w.copy_rng >> 27;
    return w.copy_rng * 0x2545F4914F6CDD1Dull;
}

// In shuffle mode, each of the calling thread's copies still in flight lands now with
// probability 1/4: over a pipeline's many calls, copies land anywhere before their wait.
static void maybe_land(Worker& w) {
    if (!w.launch->shuffle) return;
    for (AsyncCopy& c : w.cur->copies) {
        if (!c.landed && (next_rand(w) >> 62) == 0) land(w, c);
    }
}

void tc_cp_async(void* dst, const void* src, int cp_size, int src_size, int cg, const char* file, int line) {
    Worker& w = worker();
    const char* op = cg ? "cp.async.cg.shared.global" : "cp.async.ca.shared.global";
    if (cp_size != 4 && cp_size != 8 && cp_size != 16)
        w.fail(ERR_ASYNC, "%s at %s: cp-size %d is not 4, 8 or 16", op, site(file, line), cp_size);
    if (cg && cp_size != 16)
        w.fail(ERR_ASYNC, "%s at %s: .cg allows only cp-size 16, got %d", op, site(file, line), cp_size);
    if (src_size < 0 || src_size > cp_size)
        w.fail(ERR_ASYNC, "%s at %s: src-size %d is outside 0..=cp-size (%d)", op, site(file, line), src_size,
               cp_size);
    if ((uintptr_t)dst % cp_size != 0 || (uintptr_t)src % cp_size != 0)
        w.fail(ERR_ASYNC, "%s at %s: addresses must be aligned to cp-size %d (dst %p, src %p)", op, site(file, line),
               cp_size, dst, src);
    long word = shared_word(w, dst, cp_size);
    if (word < 0)
        w.fail(ERR_ASYNC,
               "%s at %s: destination %p is not inside the block's %u bytes of dynamic shared memory (the emulator "
               "tracks cp.async only into DYNAMIC_SHARED memory)",
               op, site(file, line), dst, w.launch->shared_bytes);
    ThreadState* me = w.cur;
    AsyncCopy c;
    c.dst = (char*)dst;
    c.bytes = (uint32_t)cp_size;
    c.group = -1;
    c.landed = false;
    memset(c.data, 0, sizeof c.data);
    memcpy(c.data, src, (size_t)src_size); // a bad source faults here, at the issuing thread
    memset(dst, 0xFF, (size_t)cp_size);     // poison until it lands
    for (int k = 0; k < cp_size / 4; k++) w.shadow[word + k] = shadow_word(SH_PENDING, me->linear);
    w.shadow_dirty = true;
    me->copies.push_back(c);
    maybe_land(w);
}

void tc_cp_async_commit(const char*, int) {
    Worker& w = worker();
    ThreadState* me = w.cur;
    me->groups++;
    for (AsyncCopy& c : me->copies) {
        if (c.group < 0) c.group = me->groups;
    }
    maybe_land(w);
}

void tc_cp_async_wait(int n, const char* file, int line) {
    Worker& w = worker();
    ThreadState* me = w.cur;
    if (n < 0) { // wait_all
        tc_cp_async_commit(file, line);
        n = 0;
    }
    // Groups 1..groups exist; all but the n most recent must be complete.
    int32_t done_through = me->groups - n;
    size_t keep = 0;
    for (size_t i = 0; i < me->copies.size(); i++) {
        AsyncCopy& c = me->copies[i];
        if (c.group >= 1 && c.group <= done_through) {
            if (!c.landed) land(w, c);
            long word = (c.dst - w.shared) / 4;
            for (uint32_t k = 0; k < c.bytes / 4; k++) {
                w.shadow[word + k] = shadow_word(SH_WAITED, me->linear);
                w.waited.push_back((uint32_t)(word + k));
            }
        } else {
            me->copies[keep++] = c;
        }
    }
    me->copies.resize(keep);
    maybe_land(w);
}

// ---- warp collectives -------------------------------------------------------------------------

// A lane's operands and results, on its fiber stack while it waits for the rest of the warp.
struct MmaLane {
    float* d;
    const unsigned* a;
    const unsigned* b;
    const float* c;
};
struct LdsmLane {
    unsigned* r;
    const void* row;
};

static const char* collective_name(int kind, int arg, char* buf, size_t cap) {
    if (kind != TC_LDMATRIX) return op_name(kind);
    snprintf(buf, cap, "ldmatrix.sync.aligned.m8n8.x%d%s.shared.b16", arg & 7, (arg & 8) ? ".trans" : "");
    return buf;
}

void tc_check_not_diverged(Worker& w, ThreadState* me, const char* what, unsigned mask) {
    if (!(w.lanes_in_tc[me->warp] & mask)) return; // the common case: nothing to report
    uint32_t base = me->warp * 32, lanes = lanes_in_warp(w, me->warp);
    for (uint32_t l = 0; l < lanes; l++) {
        const ThreadState& o = w.threads[base + l];
        if (o.state == T_AT_WARP && o.w_kind >= TC_MMA_BF16 && (mask >> l & 1)) {
            char buf[64];
            w.fail(ERR_WARP,
                   "diverged warp: lane %u reaches %s while lane %u waits in %s at %s (all 32 lanes must execute it "
                   "together)",
                   me->lane, what, l, collective_name(o.w_kind, o.w_arg, buf, sizeof buf), site(o.w_file, o.w_line));
        }
    }
}

void tc_thread_exited(Worker& w, ThreadState* t) { tc_check_not_diverged(w, t, "the end of the kernel", ~0u); }

static float unpack(int bf16, unsigned reg, int high) {
    unsigned short h = (unsigned short)(high ? reg >> 16 : reg & 0xFFFF);
    return bf16 ? bf16_to_f32(h) : f16_to_f32(h);
}

// The 16×8×16 product for the whole warp, lane by lane per the PTX fragment tables. Products are
// exact in f32; no FMA contraction, so each step is one f32 rounding as documented above.
__attribute__((optimize("fp-contract=off"))) static void mma_all(Worker& w, uint32_t base, int bf16) {
    float A[16][16], B[16][8], C[16][8];
    for (int l = 0; l < 32; l++) {
        const MmaLane& p = *(const MmaLane*)w.threads[base + l].w_ptr;
        int g = l >> 2, t = l & 3;
        for (int i = 0; i < 8; i++) { // a0..a7: rows g / g+8, columns 2t+(i&1) (+8 for i >= 4)
            int row = g + 8 * ((i >> 1) & 1), col = 2 * t + (i & 1) + 8 * (i >> 2);
            A[row][col] = unpack(bf16, p.a[i >> 1], i & 1);
        }
        for (int i = 0; i < 4; i++) { // b0..b3: k = 2t+(i&1) (+8 for i >= 2), column g
            int k = 2 * t + (i & 1) + 8 * (i >> 1);
            B[k][g] = unpack(bf16, p.b[i >> 1], i & 1);
        }
        for (int i = 0; i < 4; i++) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = p.c[i]; // c0..c3
    }
    float D[16][8];
    for (int r = 0; r < 16; r++) {
        for (int n = 0; n < 8; n++) {
            float acc = C[r][n];
            for (int k = 0; k < 16; k++) {
                float prod = A[r][k] * B[k][n];
                acc = acc + prod;
            }
            D[r][n] = acc;
        }
    }
    for (int l = 0; l < 32; l++) {
        const MmaLane& p = *(const MmaLane*)w.threads[base + l].w_ptr;
        int g = l >> 2, t = l & 3;
        for (int i = 0; i < 4; i++) p.d[i] = D[g + 8 * (i >> 1)][2 * t + (i & 1)];
    }
}

// The ldmatrix rows for the whole warp: matrix j's row i comes from lane 8j+i's address.
static void ldmatrix_all(Worker& w, uint32_t base, int num, int trans, const char* name, const char* where) {
    unsigned short M[4][8][8];
    for (int j = 0; j < num; j++) {
        for (int i = 0; i < 8; i++) {
            uint32_t lane = 8 * j + i;
            const LdsmLane& p = *(const LdsmLane*)w.threads[base + lane].w_ptr;
            w.cur = &w.threads[base + lane]; // errors name the lane that gave the address
            if ((uintptr_t)p.row % 16 != 0)
                w.fail(ERR_WARP, "%s at %s: lane %u's row address %p is not 16-byte aligned", name, where, lane, p.row);
            long word = shared_word(w, p.row, 16);
            if (word < 0)
                w.fail(ERR_WARP,
                       "%s at %s: lane %u's row address %p is not inside the block's %u bytes of dynamic shared "
                       "memory (the emulator supports ldmatrix from DYNAMIC_SHARED memory only)",
                       name, where, lane, p.row, w.launch->shared_bytes);
            for (int k = 0; k < 4; k++) {
                uint32_t s = w.shadow[word + k];
                if (s == 0) continue;
                char owner[48];
                thread_name(w, shadow_owner(s), owner, sizeof owner);
                size_t off = (size_t)(word + k) * 4;
                const char* why = shadow_state(s) == SH_PENDING
                                      ? "has not landed (a missing cp.async.wait_group?)"
                                  : shadow_state(s) == SH_LANDED
                                      ? "is not yet waited for (a missing cp.async.wait_group?)"
                                      : "was waited for but no __syncthreads() has made it visible to other threads "
                                        "(a missing __syncthreads()?)";
                w.fail(ERR_ASYNC, "%s at %s: lane %u reads shared bytes %zu..%zu, whose cp.async by thread %s %s", name,
                       where, lane, off, off + 4, owner, why);
            }
            memcpy(M[j][i], p.row, 16);
        }
    }
    for (int l = 0; l < 32; l++) {
        const LdsmLane& p = *(const LdsmLane*)w.threads[base + l].w_ptr;
        int q = l >> 2, t = l & 3;
        for (int j = 0; j < num; j++) {
            unsigned lo, hi;
            if (trans) { // elements (row 2t, col q) and (row 2t+1, col q)
                lo = M[j][2 * t][q], hi = M[j][2 * t + 1][q];
            } else { // elements (row q, col 2t) and (row q, col 2t+1)
                lo = M[j][q][2 * t], hi = M[j][q][2 * t + 1];
            }
            p.r[j] = lo | hi << 16;
        }
    }
}

// Arrive at a collective; the last lane computes every lane's result.
static void collective(int kind, int arg, void* operands, const char* file, int line) {
    Worker& w = worker();
    ThreadState* me = w.cur;
    char buf[64]; // the instruction's name, for error messages only (formatted when needed)
    auto name = [&] { return collective_name(kind, arg, buf, sizeof buf); };
    uint32_t base = me->warp * 32, lanes = lanes_in_warp(w, me->warp);
    if (lanes < 32)
        w.fail(ERR_WARP, "%s at %s: warp %u has only %u threads (the block size is not a multiple of 32); all 32 lanes "
                         "must execute it", name(), site(file, line), me->warp, lanes);
    maybe_land(w);
    // The common case in O(1): no other lane of the warp exited, waits at a barrier or in a plain
    // warp op, and those in a collective wait in this one (same instruction, same call site).
    // Anything else takes the lane scan below, which reports the first problem it finds.
    uint32_t wi = me->warp, others = ~(1u << me->lane), in_tc = w.lanes_in_tc[wi];
    const Worker::TcSite& at = w.tc_site[wi];
    bool scan = ((w.lanes_exited[wi] | w.lanes_at_barrier[wi] | (w.lanes_waiting[wi] & ~in_tc)) & others) != 0 ||
                (in_tc && (at.kind != kind || at.arg != arg || at.line != line || at.file != file));
    bool complete = true;
    if (!scan) complete = (in_tc | ~others) == ~0u;
    for (uint32_t l = 0; l < 32 && scan; l++) {
        const ThreadState& o = w.threads[base + l];
        if (&o == me) continue;
        if (o.state == T_EXITED)
            w.fail(ERR_WARP, "%s at %s: lane %u has exited; all 32 lanes of the warp must execute it", name(),
                   site(file, line), l);
        if (o.state == T_AT_BARRIER)
            w.fail(ERR_WARP, "diverged warp: lane %u reaches %s at %s while lane %u waits at __syncthreads() at %s",
                   me->lane, name(), site(file, line), l, site(o.bar_file, o.bar_line));
        if (o.state == T_AT_WARP && o.w_kind < TC_MMA_BF16 && !(o.w_mask >> me->lane & 1)) {
            // A warp op over other lanes (a half-warp shuffle, say): they come here after it.
            complete = false;
        } else if (o.state == T_AT_WARP) {
            bool same = o.w_kind == kind && o.w_arg == arg && o.w_line == line && o.w_file &&
                        (o.w_file == file || strcmp(o.w_file, file) == 0);
            if (!same) {
                char obuf[64];
                const char* other = collective_name(o.w_kind, o.w_arg, obuf, sizeof obuf);
                w.fail(ERR_WARP, "diverged warp: lane %u reaches %s at %s while lane %u waits in %s at %s", me->lane,
                       name(), site(file, line), l, other, o.w_file ? site(o.w_file, o.w_line) : "a warp op");
            }
        } else {
            complete = false;
        }
    }
    me->w_kind = kind, me->w_arg = arg, me->w_mask = 0xFFFFFFFFu, me->w_file = file, me->w_line = line;
    me->w_ptr = operands;
    me->state = T_AT_WARP;
    if (!complete) {
        if (!w.lanes_in_tc[wi]) w.tc_site[wi] = Worker::TcSite{kind, arg, line, file};
        w.lanes_waiting[wi] |= 1u << me->lane, w.lanes_in_tc[wi] |= 1u << me->lane;
        w.park();
        return;
    }
    if (kind == TC_LDMATRIX) {
        ldmatrix_all(w, base, arg & 7, (arg & 8) != 0, name(), site(file, line));
        w.cur = me;
    } else {
        mma_all(w, base, kind == TC_MMA_BF16);
    }
    for (uint32_t l = 0; l < 32; l++) {
        if (l != me->lane) w.push(&w.threads[base + l]);
    }
    me->state = T_RUNNING;
}

void tc_mma_m16n8k16(int bf16, float* d, const unsigned* a, const unsigned* b, const float* c, const char* file,
                     int line) {
    MmaLane p{d, a, b, c};
    collective(bf16 ? TC_MMA_BF16 : TC_MMA_F16, 0, &p, file, line);
}

void tc_ldmatrix(int num, int trans, unsigned* r, const void* row, const char* file, int line) {
    LdsmLane p{r, row};
    collective(TC_LDMATRIX, num | (trans ? 8 : 0), &p, file, line);
}

} // namespace emu
