/* kiln_hstu_seq.cuh -- one sequence of a jagged HSTU batch, as every HSTU
 * kernel (forward, Hopper forward, fp8 forward, backward) reads it: offsets,
 * the guard against bad offsets, and the context / target split.  Include
 * after kiln_common.cuh. */
#ifndef KILN_HSTU_SEQ_CUH
#define KILN_HSTU_SEQ_CUH

#include "hstu_params.h"

/* Sequence b.  A kernel that gets false skips the sequence: its offsets are
 * bad (negative, decreasing, past the totals, longer than the maxima, or
 * len_q != len_k without delta_q), so nothing of it is read or written.
 * CHECK false: the caller knows they are good (another thread of the CTA
 * has checked them), and s is filled without a branch. */
struct kiln_seq {
    int64_t q_beg, k_beg;
    int len_q, L, off;       /* off: position of query row 0 (delta_q) */
    int c_ctx, hist_end;     /* context rows [0, c_ctx); targets from hist_end */
    int group, wl, wr;       /* target group size; window (-1: unbounded) */
};

template <bool DELTA_Q, bool CONTEXT, bool TARGET, bool LOCAL, bool CHECK = true>
KILN_DEV bool kiln_seq_load(const kiln_hstu_kparams &f, int b, kiln_seq &s)
{
    const uint64_t offk_ptr = f.seq_offsets_k ? f.seq_offsets_k : f.seq_offsets_q;
    const int64_t q_beg = kiln_ld_offset(f.seq_offsets_q, f.offsets_i64, b);
    const int64_t q_end = kiln_ld_offset(f.seq_offsets_q, f.offsets_i64, b + 1);
    const int64_t k_beg = kiln_ld_offset(offk_ptr, f.offsets_i64, b);
    const int64_t k_end = kiln_ld_offset(offk_ptr, f.offsets_i64, b + 1);
    if (CHECK) {
        bool bad = q_beg < 0 || k_beg < 0 || q_end < q_beg || k_end < k_beg || q_end > f.total_q ||
                   k_end > f.total_k || q_end - q_beg > (int64_t)f.max_seqlen_q ||
                   k_end - k_beg > (int64_t)f.max_seqlen_k;
        if (!bad) {
            if (DELTA_Q) bad = q_end - q_beg > k_end - k_beg;
            else bad = q_end - q_beg != k_end - k_beg;
        }
        if (bad) return false;
    }
    s.q_beg = q_beg;
    s.k_beg = k_beg;
    s.len_q = (int)(q_end - q_beg);
    s.L = (int)(k_end - k_beg);
    s.off = DELTA_Q ? s.L - s.len_q : 0;
    s.c_ctx = 0;
    s.hist_end = s.L;
    if (CONTEXT && f.num_contexts != 0) {
        int c = ((const int32_t *)f.num_contexts)[b];
        s.c_ctx = kiln_min(kiln_max(c, 0), s.L);
    }
    if (TARGET && f.num_targets != 0) {
        int t = ((const int32_t *)f.num_targets)[b];
        t = kiln_min(kiln_max(t, 0), s.L - s.c_ctx);
        s.hist_end = s.L - t;
    }
    s.group = TARGET ? kiln_max(f.target_group_size, 1) : 1;
    s.wl = LOCAL ? f.window_left : -1;
    s.wr = LOCAL ? f.window_right : -1;
    return true;
}

/* A forward CTA whose sequence is bad counts it once (with debug checks on)
 * and leaves. */
KILN_DEV void kiln_seq_count_bad(const kiln_hstu_kparams &f)
{
    if (f.debug_counter != 0 && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0)
        kiln_red_add_u64(f.debug_counter, 1ull);
}

/* The keys [kv_lo, kv_hi) that query positions [i_min, i_max] of a
 * sequence of L keys can see under the forward's masks (context rows see
 * every history key). */
template <bool CAUSAL, bool LOCAL, bool CONTEXT>
KILN_DEV void kiln_fwd_key_span(int i_min, int i_max, int L, int c_ctx, int hist_end, int wl, int wr, int &kv_lo,
                                int &kv_hi)
{
    kv_lo = 0;
    kv_hi = L;
    if (CAUSAL) kv_hi = kiln_min(kv_hi, i_max + 1);
    if (LOCAL) {
        if (wr >= 0) kv_hi = kiln_min(kv_hi, i_max + wr + 1);
        if (wl >= 0) kv_lo = kiln_max(kv_lo, i_min - wl);
    }
    if (CONTEXT && i_min < c_ctx) kv_hi = kiln_max(kv_hi, hist_end);
}

/* The tiles of BN keys that hold keys [kv_lo, kv_hi): [n_begin, n_end),
 * empty (n_begin == n_end) when the span is. */
template <int BN> KILN_DEV void kiln_key_tiles(int kv_lo, int kv_hi, int &n_begin, int &n_end)
{
    n_begin = kv_lo / BN;
    n_end = kv_hi > kv_lo ? (kv_hi + BN - 1) / BN : n_begin;
}

/* Both at once: the forward's key tiles of query positions [i_min, i_max]. */
template <bool CAUSAL, bool LOCAL, bool CONTEXT, int BN>
KILN_DEV void kiln_fwd_key_tiles(int i_min, int i_max, int L, int c_ctx, int hist_end, int wl, int wr,
                                 int &n_begin, int &n_end)
{
    int kv_lo, kv_hi;
    kiln_fwd_key_span<CAUSAL, LOCAL, CONTEXT>(i_min, i_max, L, c_ctx, hist_end, wl, wr, kv_lo, kv_hi);
    kiln_key_tiles<BN>(kv_lo, kv_hi, n_begin, n_end);
}

/* Of those tiles, the ones the mask leaves whole for every position in
 * [i_min, i_max]: the per-element "full" test solved for the tile index
 * (each condition bounds it from one side, so they form one interval
 * [f_lo, f_hi) inside [n_begin, n_end)).  The Hopper forwards run element
 * masks only outside it. */
template <bool CAUSAL, bool LOCAL, bool TARGET, int BN>
KILN_DEV void kiln_fwd_whole_tiles(int i_min, int i_max, int L, int hist_end, int wl, int wr, int n_begin,
                                   int n_end, int &f_lo, int &f_hi)
{
    f_lo = n_begin;
    f_hi = L / BN;
    if (CAUSAL) f_hi = kiln_min(f_hi, (i_min + 1) / BN);
    if (LOCAL) {
        if (wl >= 0 && i_max - wl > 0) f_lo = kiln_max(f_lo, (i_max - wl + BN - 1) / BN);
        if (wr >= 0) f_hi = kiln_min(f_hi, (i_min + wr + 1) / BN);
    }
    if (TARGET) f_hi = kiln_min(f_hi, hist_end / BN);
    f_hi = kiln_min(f_hi, n_end);
    f_lo = kiln_min(f_lo, n_end);
    if (f_hi < f_lo) f_hi = f_lo;
}

/* Units: the m-blocks of a sequence paired so that each pair costs about
 * the same (key tiles).  Rank the s m-blocks by cost: first the nf that
 * hold context rows (they see every key), then the others from the last
 * down (under a causal mask m-block mb sees mb + 1 tiles).  For even s,
 * unit u < s / 2 is ranks u and s - 1 - u; for odd s, unit 0 is rank 0
 * alone and unit u >= 1 ranks u and s - u: with nf = 0, s + 1 or s tiles
 * each. */
KILN_DEV int kiln_units_of(int s)
{
    return (s + 1) >> 1;
}

/* M-block i (0: the heavier; < 0: none) of unit u of a sequence of s
 * m-blocks, nf of them with context rows. */
KILN_DEV int kiln_unit_mblock(int s, int u, int nf, int i)
{
    const int r = i == 0 ? u : (s & 1) ? (u == 0 ? -1 : s - u) : s - 1 - u;
    return r < 0 ? -1 : r < nf ? r : s - 1 - (r - nf);
}

#endif /* KILN_HSTU_SEQ_CUH */
