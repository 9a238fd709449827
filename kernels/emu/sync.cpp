// sync.cpp — __syncthreads and the warp operations, and the deadlock report.
#include "runtime.h"

#include <stdio.h>
#include <string.h>

namespace emu {

int block_barrier(const char* file, int line, int pred) {
    Worker& w = worker();
    ThreadState* me = w.cur;
    tc_check_not_diverged(w, me, "__syncthreads()", ~0u);
    me->bar_file = file;
    me->bar_line = line;
    me->bar_pred = pred;
    me->state = T_AT_BARRIER;
    w.at_barrier++;
    w.lanes_at_barrier[me->warp] |= 1u << me->lane;
    // The block runner releases the barrier once nothing else can run (see run_block).
    w.park();
    return me->bar_result;
}

const char* op_name(int kind) {
    switch (kind) {
    case WARP_SYNC: return "__syncwarp";
    case SHFL_IDX: return "__shfl_sync";
    case SHFL_UP: return "__shfl_up_sync";
    case SHFL_DOWN: return "__shfl_down_sync";
    case SHFL_XOR: return "__shfl_xor_sync";
    case VOTE_BALLOT: return "__ballot_sync";
    case VOTE_ANY: return "__any_sync";
    case VOTE_ALL: return "__all_sync";
    case TC_MMA_BF16: return "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32";
    case TC_MMA_F16: return "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32";
    case TC_LDMATRIX: return "ldmatrix.sync.aligned.m8n8.shared.b16";
    default: return "warp op";
    }
}

uint32_t lanes_in_warp(const Worker& w, uint32_t warp) {
    uint32_t rest = w.nthreads - warp * 32;
    return rest < 32 ? rest : 32;
}

// PTX shfl semantics: returns the source lane, or -1 when the caller keeps its own value.
static int shfl_source(int kind, int lane, int b, int width) {
    int segmask = ~(width - 1) & 31;
    int cval = kind == SHFL_UP ? 0 : 31;
    int max_lane = (lane & segmask) | (cval & ~segmask);
    int min_lane = lane & segmask;
    int j;
    bool ok;
    b &= 31;
    switch (kind) {
    case SHFL_UP: j = lane - b, ok = j >= max_lane; break;
    case SHFL_DOWN: j = lane + b, ok = j <= max_lane; break;
    case SHFL_XOR: j = lane ^ b, ok = j <= max_lane; break;
    default: j = min_lane | (b & ~segmask), ok = j <= max_lane; break;
    }
    return ok ? j : -1;
}

// Called by the last lane to arrive: compute every participant's result, wake the others.
static void complete_warp_op(Worker& w, ThreadState* me, uint32_t base, unsigned mask) {
    unsigned long long ballot = 0;
    for (int l = 0; l < 32; l++) {
        if ((mask >> l & 1) && w.threads[base + l].w_val != 0) ballot |= 1ull << l;
    }
    for (int l = 0; l < 32; l++) {
        if (!(mask >> l & 1)) continue;
        ThreadState& t = w.threads[base + l];
        switch (t.w_kind) {
        case VOTE_BALLOT: t.w_result = ballot; break;
        case VOTE_ANY: t.w_result = ballot != 0; break;
        case VOTE_ALL: t.w_result = ballot == mask; break;
        case WARP_SYNC: t.w_result = 0; break;
        default: {
            int src = shfl_source(t.w_kind, l, t.w_arg, t.w_width);
            if (src < 0) {
                t.w_result = t.w_val;
            } else if (!(mask >> src & 1)) {
                w.cur = &t;
                w.fail(ERR_WARP, "%s: lane %d reads lane %d, which is not in the mask 0x%08x", op_name(t.w_kind), l,
                       src, mask);
            } else {
                t.w_result = w.threads[base + src].w_val;
            }
        }
        }
        if (&t != me) w.push(&t);
    }
    me->state = T_RUNNING;
}

unsigned long long warp_op(int kind, unsigned mask, unsigned long long value, int arg, int width) {
    Worker& w = worker();
    ThreadState* me = w.cur;
    if (width < 1 || width > 32 || (width & (width - 1)) != 0)
        w.fail(ERR_WARP, "%s: width %d is not a power of two in 1..32", op_name(kind), width);
    if (!(mask >> me->lane & 1))
        w.fail(ERR_WARP, "%s: the calling lane %u is not in its mask 0x%08x", op_name(kind), me->lane, mask);
    tc_check_not_diverged(w, me, op_name(kind), mask);
    me->w_kind = kind, me->w_mask = mask, me->w_val = value, me->w_arg = arg, me->w_width = width;
    me->w_file = nullptr, me->w_line = 0;
    me->state = T_AT_WARP;
    uint32_t base = me->warp * 32, lanes = lanes_in_warp(w, me->warp);
    unsigned in_block = lanes == 32 ? ~0u : (1u << lanes) - 1;
    unsigned waiting = w.lanes_waiting[me->warp] | 1u << me->lane;
    // The lane scan runs when it must report an error, or when every lane of the mask is waiting
    // in some warp op (it then checks they wait in this one): once per op, not once per lane.
    bool complete = false;
    if ((mask & ~in_block) || (mask & w.lanes_exited[me->warp]) || (waiting & mask) == mask) {
        complete = true;
        for (uint32_t l = 0; l < 32; l++) {
            if (!(mask >> l & 1)) continue;
            if (l >= lanes)
                w.fail(ERR_WARP, "%s: mask 0x%08x names lane %u, which does not exist (the block has %u threads)",
                       op_name(kind), mask, l, w.nthreads);
            const ThreadState& o = w.threads[base + l];
            if (o.state == T_EXITED)
                w.fail(ERR_WARP, "%s: mask 0x%08x names lane %u, which has exited", op_name(kind), mask, l);
            // A lane still in an earlier op of its own (e.g. a half-warp shuffle) arrives later;
            // if it never can, the block runner reports the deadlock.
            if (o.state != T_AT_WARP || o.w_mask != mask || o.w_kind != kind) complete = false;
        }
    }
    if (complete) {
        complete_warp_op(w, me, base, mask);
    } else {
        w.lanes_waiting[me->warp] |= 1u << me->lane;
        w.park();
    }
    return me->w_result;
}

unsigned active_mask() {
    Worker& w = worker();
    uint32_t base = w.cur->warp * 32, lanes = lanes_in_warp(w, w.cur->warp);
    unsigned m = 0;
    for (uint32_t l = 0; l < lanes; l++) {
        if (w.threads[base + l].state != T_EXITED) m |= 1u << l;
    }
    return m;
}

// Why nothing can run: which barriers hold how many threads, who exited, which warp op waits.
void describe_deadlock(Worker& w, char* out, size_t cap) {
    size_t len = 0;
#define EMU_PUT(...) (len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, __VA_ARGS__))
    std::vector<bool> seen(w.nthreads, false);
    for (uint32_t i = 0; i < w.nthreads; i++) {
        const ThreadState& t = w.threads[i];
        if (t.state != T_AT_BARRIER || seen[i]) continue;
        uint32_t n = 0;
        for (uint32_t j = i; j < w.nthreads; j++) {
            const ThreadState& u = w.threads[j];
            if (u.state == T_AT_BARRIER && u.bar_line == t.bar_line && strcmp(u.bar_file, t.bar_file) == 0) {
                seen[j] = true;
                n++;
            }
        }
        EMU_PUT("%s__syncthreads() at %s:%d reached by %u of %u threads", len ? "; " : "", t.bar_file, t.bar_line, n,
                w.nthreads);
    }
    if (w.exited) EMU_PUT("%s%u threads exited without reaching it", len ? "; " : "", w.exited);
    for (uint32_t i = 0; i < w.nthreads; i++) {
        const ThreadState& t = w.threads[i];
        if (t.state != T_AT_WARP) continue;
        uint32_t base = t.warp * 32, missing = 0;
        for (uint32_t l = 0; l < 32; l++) {
            const ThreadState& o = w.threads[base + l];
            if ((t.w_mask >> l & 1) && (o.state != T_AT_WARP || o.w_mask != t.w_mask || o.w_kind != t.w_kind)) {
                missing = l;
                break;
            }
        }
        const ThreadState& m = w.threads[base + missing];
        char why[96];
        if (m.state == T_AT_WARP)
            snprintf(why, sizeof why, "waits in %s(mask 0x%08x)", op_name(m.w_kind), m.w_mask);
        else
            snprintf(why, sizeof why, "%s", m.state == T_EXITED ? "has exited" : "waits at __syncthreads()");
        EMU_PUT("%sthread (%u,%u,%u) waits in %s(mask 0x%08x) for lane %u, which %s", len ? "; " : "", t.tid.x,
                t.tid.y, t.tid.z, op_name(t.w_kind), t.w_mask, missing, why);
        break; // one is enough to see the problem
    }
#undef EMU_PUT
}

} // namespace emu
