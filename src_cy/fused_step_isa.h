/* The fused kernels' loops, written once for every ISA: fused_step.h includes this file
 * once per ISA, with FL_ISA(name) = name##_avx512 and FL_ISA_TARGET the AVX-512 target,
 * then name##_avx2 with AVX2 + FMA, then name##_bf16 with AVX512-BF16, so each copy
 * inlines its own ISA's register tiles (fused_tiles_avx512.h, fused_tiles_avx2.h,
 * fused_tiles_bf16.h: the same contracts) and is compiled for it. FL_PACKED_ROWS(K):
 * rows of packed weights for K rows of k (K in float32; K / 2 rounded up in bfloat16
 * pairs). No include guard: included once per ISA on purpose. The public names
 * (fused_step.h) call one copy or another by the ISA chosen at import and the call's
 * compute dtype. */

/* The gate math of row r (sequence b) for units u0 .. u0 + n - 1 from its products z (64
 * floats): what every schedule of the step below passes alike. */
#define FL_ROW_GATES(r, b, u0, n, z)                                                      \
    FL_ISA(fl_fused_gates)(n, H, x ? bias + (u0) : xproj + (t * B + (b)) * G + (u0), z,   \
                           peep + (u0), use_peep, forget_bias, clip,                     \
                           c_loc + (r) * H + (u0), h_new + (r) * H + (u0),               \
                           acts ? acts + (t * B + (b)) * G + (u0) : act_tmp + (u0),      \
                           out->c + t * out->c_t + (b) * out->c_b + (u0),                \
                           out->h + t * out->h_t + (b) * out->h_b + (u0),                \
                           clip > 0 ? c_unclipped + (t * B + (b)) * H + (u0) : NULL)

#ifndef FL_PAIRS_PASSES
/* z[r][0:64] = [a_r, b_r] W for the rows r < n_rows, a_r = a[r][0:KA] (a not read when
 * KA = 0), b_r = b[r][0:KB], W: KA + KB rows of 64 floats (a group's or a block's packed
 * weights, past L1). In passes of FL_F32_PASS rows of k over all rows, so that a pass's
 * weights are read from L1 by every tile of rows (in one pass per tile each tile streamed
 * them from L2 or L3: 4 MB per group and step at B = 64, I = H = 512), while the next
 * pass's are prefetched. Each element is one in-order FMA chain over k continued from pass
 * to pass: the bits of fl_tile_4x64 in one pass, for any rows per tile. z:
 * FL_PASS_Z_ROWS(n_rows) rows (the last tile writes whole), 64-byte aligned. */
#define FL_PASS_Z_ROWS(n) (((n) + FL_PASS_TILE_ROWS - 1) / FL_PASS_TILE_ROWS * FL_PASS_TILE_ROWS)
FL_ISA_TARGET
static void FL_ISA(fl_rows_passes_f32)(ptrdiff_t n_rows, ptrdiff_t KA,
                                       const float* const* a, ptrdiff_t KB,
                                       const float* const* b, const float* restrict W,
                                       float* restrict z) {
    const ptrdiff_t K = KA + KB;
    for (ptrdiff_t k0 = 0; k0 < K; k0 += FL_F32_PASS) {
        const ptrdiff_t k1 = K - k0 < FL_F32_PASS ? K : k0 + FL_F32_PASS;
        /* the pass's rows of k in a (ka0 .. ka1) and in b (kb0 .. kb1) */
        const ptrdiff_t ka0 = k0 < KA ? k0 : KA, ka1 = k1 < KA ? k1 : KA;
        const ptrdiff_t kb0 = k0 > KA ? k0 - KA : 0, kb1 = k1 > KA ? k1 - KA : 0;
        for (ptrdiff_t r0 = 0, nr; r0 < n_rows; r0 += nr) {
            /* FL_PASS_TILE_ROWS rows a tile, but 7 or 8 rows left as two 4-row tiles (a
             * 6-row tile left one of 1 or 2 rows computing 4) */
            const ptrdiff_t left = n_rows - r0;
            nr = left <= FL_PASS_TILE_ROWS ? left
                 : FL_PASS_TILE_ROWS > 4 && left <= 8 ? 4 : FL_PASS_TILE_ROWS;
            const float* ar[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
            const float* br[6] = {NULL, NULL, NULL, NULL, NULL, NULL};
            for (int i = 0; i < FL_PASS_TILE_ROWS; i++) {  /* rows past nr repeat the last */
                const ptrdiff_t m = r0 + (i < nr ? i : nr - 1);
                if (ka1 > ka0) ar[i] = a[m] + ka0;
                if (kb1 > kb0) br[i] = b[m] + kb0;
            }
#if FL_PASS_TILE_ROWS > 4
            if (nr > 4) {
                /* tile i prefetches quarter i % 4 of the next pass's 16 KB, a line per row
                 * of k, so the first four cover it (the weights past L2 at these sizes:
                 * every step streams them from L3; 26.5 -> 22.0 ms at (64, 25, 512, 512)
                 * on an Intel Xeon) */
                FL_ISA(fl_tile_6x64_acc)(ka1 - ka0, ar, kb1 - kb0, br, W + k0 * 64,
                                         (float(*)[64])(z + r0 * 64), k0 > 0,
                                         W + k1 * 64 + (r0 / 6 % 4) * FL_F32_PASS * 16);
                continue;
            }
            FL_ISA(fl_tile_4x64_acc)(ka1 - ka0, ar[0], ar[1], ar[2], ar[3], kb1 - kb0,
                                     br[0], br[1], br[2], br[3], W + k0 * 64,
                                     (float(*)[64])(z + r0 * 64), k0 > 0);
#else
            /* tiles of up to 4 rows (AVX2): the first four prefetch a quarter of the next
             * pass each, a line per row of k in their first column pass (a burst of 64
             * prefetches before each tile instead stalled on the fill buffers on a Zen 3) */
            fl_tile_nx64_passes_avx2(nr, ka1 - ka0, ar, kb1 - kb0, br, W + k0 * 64,
                                     (float(*)[64])(z + r0 * 64), k0 > 0,
                                     r0 < 16 ? W + k1 * 64 + (r0 / 4) * FL_F32_PASS * 16
                                             : NULL);
#endif
        }
    }
}
#endif

/* x == NULL: z = xproj[t, b] + h W_h (xproj = x W_x + b from a GEMM before the loop).
 * x != NULL: z = [x_t, h] [W_x; W_h] + b in one sum, W_x packed above W_h in Wp (group g:
 * I + H rows), and xproj is not read (the input projection needs no pass of its own). */
FL_ISA_TARGET
static void FL_ISA(fl_lstm_fwd_fused_f32)(
        ptrdiff_t n_rows, ptrdiff_t H, const float* restrict h_old,
        const float* restrict Wp, const int64_t* restrict rows, ptrdiff_t B, ptrdiff_t t,
        const float* restrict xproj, ptrdiff_t I, const float* restrict x,
        const float* restrict bias, const float* restrict peep, int use_peep,
        float forget_bias, float clip, float* restrict c_loc, float* restrict h_new,
        float* restrict acts, float* restrict act_tmp, const fl_layout_f32* out,
        float* restrict c_unclipped, ptrdiff_t g_lo, ptrdiff_t g_hi) {
    /* groups g_lo .. g_hi - 1 only (units 16 g_lo .. 16 g_hi - 1): the whole step is
     * 0 .. ceil(H / 16); the hidden-unit split gives each thread its own range */
    float ztile[4][64] __attribute__((aligned(64)));
    const ptrdiff_t G = 4 * H, KX = x ? I : 0, KP = FL_PACKED_ROWS(KX) + FL_PACKED_ROWS(H);
    if (n_rows == 1) {                           /* up to four groups at once: fl_row_blocks */
        const ptrdiff_t b = rows[0];
        for (ptrdiff_t g0 = g_lo; g0 < g_hi; g0 += 4) {
            const ptrdiff_t nb = g_hi - g0 < 4 ? g_hi - g0 : 4;
            if (!x)
                for (ptrdiff_t j = 0; j < nb; j++)
                    fl_prefetch_gates(xproj + (t * B + b) * G + 16 * (g0 + j), H);
            FL_ISA(fl_row_blocks)(KX, x ? x + t * out->x_t + b * out->x_b : NULL, H, h_old,
                                  Wp + g0 * KP * 64, KP * 64, nb, ztile);
            for (ptrdiff_t j = 0; j < nb; j++) {
                const ptrdiff_t u0 = 16 * (g0 + j), n = H - u0 < 16 ? H - u0 : 16;
                FL_ROW_GATES(0, b, u0, n, ztile[j]);
            }
        }
        return;
    }
#ifdef FL_PAIRS_PASSES
    /* bfloat16: the rows' [x_t, h] rounded into pair rows once per step (not once per
     * group), then each group's products in passes of FL_PAIRS_CHUNK pair rows over all
     * rows (L1-sized, as gemm_rows_bf16), z kept per row until the gate math */
    const ptrdiff_t KPX = FL_PACKED_ROWS(KX), ld = FL_PAIRS_LD(KP);
    /* on AMX tiles, the products of all groups in one GEMM (per group, the tiles'
     * configuration and the reads of all rows' pairs were half the step; per 8 groups,
     * (64, 25, 512, 512) inference took 8.3-9.3 ms against 7.4 in one) */
    const ptrdiff_t per = fl_amx_on ? g_hi - g_lo : 1, ldz = 64 * per;
    uint32_t* pairs = (uint32_t*)_mm_malloc((size_t)(n_rows * ld + n_rows * ldz) * 4, 64);
    if (pairs) {
        float* z = (float*)(pairs + n_rows * ld);
        for (ptrdiff_t r = 0; r < n_rows; r++) {
            if (x) fl_bf16_row_pairs(KX, x + t * out->x_t + rows[r] * out->x_b, pairs + r * ld);
            fl_bf16_row_pairs(H, h_old + r * H, pairs + r * ld + KPX);
        }
        for (ptrdiff_t g0 = g_lo; g0 < g_hi; g0 += per) {
            const ptrdiff_t g1 = g_hi - g0 < per ? g_hi : g0 + per;
            /* xproj's four gate lines of a row: the first rows' during the products, the
             * rest FL_XPROJ_AHEAD rows ahead of the gate math (all at once overflowed
             * the miss buffers: the gate math waited on these loads, 60% of its time) */
            if (!x)
                for (ptrdiff_t r = 0; r < n_rows && r < FL_XPROJ_AHEAD; r++)
                    fl_prefetch_gates(xproj + (t * B + rows[r]) * G + 16 * g0, H);
            fl_gemm_pairs_bf16(KP, pairs, 1, ld, (const uint32_t*)(Wp + g0 * KP * 64), z, ldz,
                               0, g1 - g0, 0, n_rows);
            for (ptrdiff_t g = g0; g < g1; g++) {
                const ptrdiff_t u0 = 16 * g, n = H - u0 < 16 ? H - u0 : 16;
                if (!x && g > g0)
                    for (ptrdiff_t r = 0; r < n_rows && r < FL_XPROJ_AHEAD; r++)
                        fl_prefetch_gates(xproj + (t * B + rows[r]) * G + u0, H);
                for (ptrdiff_t r = 0; r < n_rows; r++) {
                    if (!x && r + FL_XPROJ_AHEAD < n_rows)
                        fl_prefetch_gates(xproj + (t * B + rows[r + FL_XPROJ_AHEAD]) * G + u0,
                                          H);
                    FL_ROW_GATES(r, rows[r], u0, n, z + r * ldz + 64 * (g - g0));
                }
            }
        }
        _mm_free(pairs);
        return;
    }                                   /* out of memory: the tiles below, per group */
#else
    /* float32, several tiles of rows and a group's weights past L1 (more than
     * FL_F32_ONE_PASS_ROWS rows of k: the seed's 156 rows took 5-15% longer in passes,
     * on an Intel Xeon): each group's sums in
     * passes of FL_F32_PASS rows of k over all rows, z kept per row until the gate math,
     * so a pass's weights are read from L1 by every 4-row tile (in one pass each tile
     * streamed them from L2: 4 MB per group and step at B = 64, I = H = 512). Worth 3-5%
     * there on an Intel Xeon; the tiles' FMA rate is the bound. The passes continue each
     * element's FMA chain: the bits of one pass. */
    if (n_rows > 4 && KP > FL_F32_ONE_PASS_ROWS) {
        const ptrdiff_t nz = FL_PASS_Z_ROWS(n_rows);
        float* z = (float*)_mm_malloc((size_t)nz * 64 * sizeof(float)
                                      + (size_t)(2 * n_rows) * sizeof(float*), 64);
        if (z) {
            const float** xr = (const float**)(z + nz * 64);
            const float** hr = xr + n_rows;
            for (ptrdiff_t r = 0; r < n_rows; r++) {
                xr[r] = x ? x + t * out->x_t + rows[r] * out->x_b : NULL;
                hr[r] = h_old + r * H;
            }
            for (ptrdiff_t g = g_lo; g < g_hi; g++) {
                const ptrdiff_t u0 = 16 * g, n = H - u0 < 16 ? H - u0 : 16;
                if (!x)
                    for (ptrdiff_t r = 0; r < n_rows && r < FL_XPROJ_AHEAD; r++)
                        fl_prefetch_gates(xproj + (t * B + rows[r]) * G + u0, H);
                FL_ISA(fl_rows_passes_f32)(n_rows, KX, xr, H, hr, Wp + g * KP * 64, z);
                for (ptrdiff_t r = 0; r < n_rows; r++) {
                    if (!x && r + FL_XPROJ_AHEAD < n_rows)
                        fl_prefetch_gates(xproj + (t * B + rows[r + FL_XPROJ_AHEAD]) * G + u0,
                                          H);
                    FL_ROW_GATES(r, rows[r], u0, n, z + r * 64);
                }
            }
            _mm_free(z);
            return;
        }                               /* out of memory: one pass per tile, below */
    }
#endif
    for (ptrdiff_t g = g_lo; g < g_hi; g++) {
        const float* Wg = Wp + g * KP * 64;
        const ptrdiff_t u0 = 16 * g, n = H - u0 < 16 ? H - u0 : 16;
        for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += 4) {
            const ptrdiff_t nr = n_rows - r0 < 4 ? n_rows - r0 : 4;
            const float* xr[4] = {NULL, NULL, NULL, NULL};
            const float* hr[4];
            for (int i = 0; i < 4; i++) hr[i] = fl_tile_row(h_old, H, r0, nr, i);
            if (x)
                for (int i = 0; i < 4; i++)
                    xr[i] = x + t * out->x_t + rows[r0 + (i < nr ? i : nr - 1)] * out->x_b;
            else
                for (ptrdiff_t i = 0; i < nr; i++)
                    fl_prefetch_gates(xproj + (t * B + rows[r0 + i]) * G + u0, H);
            FL_ISA(fl_tile_nx64)(nr, KX, xr, H, hr, Wg, ztile);
            for (ptrdiff_t rr = 0; rr < nr; rr++)
                FL_ROW_GATES(r0 + rr, rows[r0 + rr], u0, n, ztile[rr]);
        }
    }
}

#undef FL_ROW_GATES

/* One row a (K floats) times W^T, W (N x K) packed by fl_pack_fused_t_f32, into out
 * (blocks c_lo .. c_hi - 1 of 64 columns, N in all): up to four blocks at once
 * (fl_row_blocks), the same in-order sums as the tiles of more rows. */
FL_ISA_TARGET
static void FL_ISA(fl_row_wt_f32)(ptrdiff_t K, const float* restrict a,
                                   const float* restrict WTp, ptrdiff_t N,
                                   float* restrict out, ptrdiff_t c_lo, ptrdiff_t c_hi) {
    float blocks[4][64] __attribute__((aligned(64)));
    for (ptrdiff_t c0 = c_lo; c0 < c_hi; c0 += 4) {
        const ptrdiff_t nb = c_hi - c0 < 4 ? c_hi - c0 : 4;
        FL_ISA(fl_row_blocks)(K, a, 0, NULL, WTp + c0 * FL_PACKED_ROWS(K) * 64,
                              FL_PACKED_ROWS(K) * 64, nb, blocks);
        for (ptrdiff_t j = 0; j < nb; j++) {
            const ptrdiff_t u0 = 64 * (c0 + j), n = N - u0 < 64 ? N - u0 : 64;
            memcpy(out + u0, blocks[j], n * sizeof(float));
        }
    }
}

/* Rows of A W^T, for W (N x K) packed by fl_pack_fused_t_f32: row m of the result, from
 * row rows[m] of A (K wide, rows lda apart; rows NULL: row m), goes to C + c_off[m]
 * (c_off NULL: C + m * ldc), columns of blocks c_lo .. c_hi - 1 (N in all). A 4 x 64 tile
 * sums over k in order (fl_tile_4x64), or an 8 x 16 / 8 x 32 one (fl_tile_8xv) for a
 * last block 16 / 32 or fewer columns wide: the same bits for any split of the rows and
 * either tile. The backward's dz W_h^T (below), and the input gradient dz W_x^T: there,
 * for a variable-length batch, dz is read in place at the steps that exist and each row
 * written straight into the caller's layout (no gathered copy, no scatter, no
 * transposing copy). */
FL_ISA_TARGET
static void FL_ISA(fl_gemm_rows_wt_f32)(
        ptrdiff_t n_rows, const int64_t* restrict rows, ptrdiff_t K, const float* restrict A,
        ptrdiff_t lda, const float* restrict WTp, ptrdiff_t N, float* restrict C,
        const int64_t* restrict c_off, ptrdiff_t ldc, ptrdiff_t c_lo, ptrdiff_t c_hi) {
#ifdef FL_PAIRS_PASSES
    /* AMX: the rows rounded into pair rows once, then each block's product of them all
     * into z (one GEMM on the tiles), copied to the rows' places */
    if (fl_amx_on) {
        const ptrdiff_t KP = FL_PACKED_ROWS(K), ld = FL_PAIRS_LD(KP);
        uint32_t* pairs = (uint32_t*)_mm_malloc((size_t)(n_rows * ld + n_rows * 64) * 4, 64);
        if (pairs) {
            float* z = (float*)(pairs + n_rows * ld);
            for (ptrdiff_t m = 0; m < n_rows; m++)
                fl_bf16_row_pairs(K, A + (rows ? rows[m] : m) * lda, pairs + m * ld);
            for (ptrdiff_t c = c_lo; c < c_hi; c++) {
                const ptrdiff_t u0 = 64 * c, n = N - u0 < 64 ? N - u0 : 64;
                fl_gemm_pairs_amx(KP, pairs, ld, (const uint32_t*)WTp + c * KP * 64, z, 64,
                                  0, 1, 0, n_rows);
                for (ptrdiff_t m = 0; m < n_rows; m++)
                    memcpy(C + (c_off ? c_off[m] : m * ldc) + u0, z + m * 64,
                           n * sizeof(float));
            }
            _mm_free(pairs);
            return;
        }                               /* out of memory: the tiles below */
    }
#else
    if (n_rows == 1) {    /* not a 4-row tile of copies of the row: a GRU step of one
                             sequence took twice BLAS's matrix-vector time that way */
        FL_ISA(fl_row_wt_f32)(K, A + (rows ? rows[0] : 0) * lda, WTp, N,
                              C + (c_off ? c_off[0] : 0), c_lo, c_hi);
        return;
    }
#endif
    float tile[8][64] __attribute__((aligned(64)));
#ifndef FL_PAIRS_PASSES
    /* full blocks of weights past L1 in passes over all rows (fl_rows_passes_f32), where
     * this call's blocks are more than half of L2: in L2, one pass per tile was faster
     * ((16, 150, 256, 256) training 7% on an Intel Xeon with 2 MB; at (64, 25, 512, 512),
     * 4 MB, passes 1-4% faster) */
    float* z = NULL;
    const float** ar = NULL;
    if (n_rows > 4 && K > FL_F32_ONE_PASS_ROWS
            && (c_hi - c_lo) * K * 64 * (ptrdiff_t)sizeof(float) > fl_l2_bytes() / 2) {
        const ptrdiff_t nz = FL_PASS_Z_ROWS(n_rows);
        z = (float*)_mm_malloc((size_t)nz * 64 * sizeof(float)
                               + (size_t)n_rows * sizeof(float*), 64);
        if (z) {
            ar = (const float**)(z + nz * 64);
            for (ptrdiff_t m = 0; m < n_rows; m++) ar[m] = A + (rows ? rows[m] : m) * lda;
        }
    }
#endif
    for (ptrdiff_t c = c_lo; c < c_hi; c++) {
        const float* Wc = WTp + c * FL_PACKED_ROWS(K) * 64;
        const ptrdiff_t u0 = 64 * c, n = N - u0 < 64 ? N - u0 : 64;
#ifndef FL_PAIRS_PASSES
        if (z && n > 32) {
            FL_ISA(fl_rows_passes_f32)(n_rows, 0, NULL, K, ar, Wc, z);
            for (ptrdiff_t m = 0; m < n_rows; m++)
                memcpy(C + (c_off ? c_off[m] : m * ldc) + u0, z + m * 64, n * sizeof(float));
            continue;
        }
#endif
        const int R = n <= 32 ? 8 : 4;                  /* rows per tile */
        for (ptrdiff_t r0 = 0; r0 < n_rows; r0 += R) {
            const ptrdiff_t nr = n_rows - r0 < R ? n_rows - r0 : R;
            const float* a[8];
            for (int i = 0; i < R; i++) {               /* rows past nr repeat the last */
                const ptrdiff_t m = r0 + (i < nr ? i : nr - 1);
                a[i] = A + (rows ? rows[m] : m) * lda;
            }
            if (n <= 16)
                FL_ISA(fl_tile_8xv)(K, a, Wc, 1, tile);
            else if (n <= 32)
                FL_ISA(fl_tile_8xv)(K, a, Wc, 2, tile);
            else
                FL_ISA(fl_tile_nx64)(nr, K, a, 0, a, Wc, tile);
            for (ptrdiff_t rr = 0; rr < nr; rr++)
                memcpy(C + (c_off ? c_off[r0 + rr] : (r0 + rr) * ldc) + u0, tile[rr],
                       n * sizeof(float));
        }
    }
#ifndef FL_PAIRS_PASSES
    _mm_free(z);
#endif
}

/* The backward's per-step product dh (rows x H) = dz (rows x 4H) @ W_h^T, float32,
 * AVX-512, with W_h^T packed once per call (fl: pack_fused_t) into blocks of 64 units:
 * block c holds 4H rows of 64 floats, W_h[64c + j, k] at row k, column j (zero past H).
 * A 4 x 64 tile of dh accumulates over k = 0 .. 4H-1 in order, as in the forward. */
FL_ISA_TARGET
static void FL_ISA(fl_gemm_dz_wt_f32)(
        ptrdiff_t n_rows, ptrdiff_t H, const float* restrict dz, const float* restrict WTp,
        float* restrict dh, ptrdiff_t c_lo, ptrdiff_t c_hi) {
    /* blocks c_lo .. c_hi - 1 only (units 64 c_lo .. 64 c_hi - 1): the whole product is
     * 0 .. ceil(H / 64); the hidden-unit split gives each thread its own range */
    const ptrdiff_t K = 4 * H;
    if (n_rows == 1) {
        FL_ISA(fl_row_wt_f32)(K, dz, WTp, H, dh, c_lo, c_hi);
        return;
    }
    FL_ISA(fl_gemm_rows_wt_f32)(n_rows, NULL, K, dz, K, WTp, H, dh, NULL, H, c_lo, c_hi);
}

#ifndef FL_NO_GEMM_TN     /* the bfloat16 copy has no weight-gradient tiles (float32) */
/* C (M x N, row stride ldc) = A^T B for A (K x M) and B (K x N), rows lda and ldb floats
 * apart, float32: the weight gradients [x, h_{t-1}, 1]^T dz, a long sum (K = T B
 * rows) into a short, wide result; A may come in segments (x, h_{t-1} and the ones, with
 * no copy into one [x, h_{t-1}, 1] array). Column blocks c_lo .. c_hi - 1 of 64 (N a
 * multiple of 64).
 *
 * The sum over k goes in pieces of FL_TN_KS rows. A piece of up to FL_TN_GROUP blocks of
 * B is first copied into contiguous 32 KB buffers, one per block: B's rows are 2^n floats
 * apart, rows that far apart share a few L1 sets, and read in place a piece did not stay
 * in L1. Then every 4 x 64 tile of C sums its block's piece in order in 16 registers and
 * adds it to C. The group's blocks share each piece of A, read once from memory instead
 * of once per block (in a fit, where A and B come cold from the backward: 1.37 ms
 * against 1.59 for OpenBLAS's blocks, 1.80 one block at a time). Summing by pieces, as
 * BLAS does, keeps float32's error growing with K / 128 + 128 terms, not K (one running
 * sum was 5x less accurate than OpenBLAS at the seed's size); the pieces and their order
 * do not depend on the threads: same bits for any count. Measured alone at the seed's
 * size (M = 157, N = 512, K = 3584, 2 threads): 1.20-1.26 ms against 1.44-1.49 for
 * OpenBLAS's blocks; (1025, 2048, K = 3200) 30.3 against 30.5. */
FL_ISA_TARGET
static void FL_ISA(fl_gemm_tn_f32)(
        ptrdiff_t K, const int64_t* restrict krows, ptrdiff_t n_seg, const float* const* A,
        const ptrdiff_t* lda, const ptrdiff_t* M, const float* restrict B, ptrdiff_t ldb,
        float* restrict C, ptrdiff_t ldc, ptrdiff_t c_lo, ptrdiff_t c_hi, float* restrict Bp) {
    /* A in n_seg segments stacked along C's rows: segment s, (rows x M[s]) with rows
     * lda[s] apart (lda 0: one row repeated, e.g. ones for the bias gradient), gives C's
     * next M[s] rows. The sum runs over K rows of A and B: rows krows[0 .. K-1], or
     * 0 .. K-1 when krows is NULL (the steps that exist of a variable-length batch, with
     * no gathered copies). Bp: FL_TN_GROUP * FL_TN_KS * 64 floats of scratch, 64-byte
     * aligned. */
    float tile[4][64] __attribute__((aligned(64)));
    for (ptrdiff_t g0 = c_lo; g0 < c_hi; g0 += FL_TN_GROUP)
        for (ptrdiff_t k0 = 0; k0 < K; k0 += FL_TN_KS) {
            const ptrdiff_t ks = K - k0 < FL_TN_KS ? K - k0 : FL_TN_KS;
            const ptrdiff_t g1 = c_hi - g0 < FL_TN_GROUP ? c_hi : g0 + FL_TN_GROUP;
            for (ptrdiff_t c = g0; c < g1; c++)
                for (ptrdiff_t k = 0; k < ks; k++)
                    memcpy(Bp + ((c - g0) * FL_TN_KS + k) * 64,
                           B + (krows ? krows[k0 + k] : k0 + k) * ldb + 64 * c,
                           64 * sizeof(float));
            for (ptrdiff_t s = 0, row0 = 0; s < n_seg; row0 += M[s], s++)
            for (ptrdiff_t c = g0; c < g1; c++)
            for (ptrdiff_t i0 = 0; i0 < M[s]; i0 += 4) {
                /* columns of A past M repeat the last one (computed, never stored) */
                const ptrdiff_t nr = M[s] - i0 < 4 ? M[s] - i0 : 4;
                const ptrdiff_t o1 = nr > 1 ? 1 : 0, o2 = nr > 2 ? 2 : nr - 1;
                const ptrdiff_t o3 = nr > 3 ? 3 : nr - 1;
                float* Ct = C + (row0 + i0) * ldc + 64 * c;
                const ptrdiff_t ld = lda[s];
                FL_ISA(fl_tn_tile)(ks, krows ? krows + k0 : NULL,
                                   A[s] + i0 + (krows ? 0 : k0 * ld), ld, o1, o2, o3,
                                   Bp + (c - g0) * FL_TN_KS * 64, tile);
                for (ptrdiff_t r = 0; r < nr; r++) {
                    if (k0 == 0) {
                        memcpy(Ct + r * ldc, tile[r], 64 * sizeof(float));
                        continue;
                    }
                    for (int v = 0; v < 64; v += 16)         /* C += this piece's sum */
                        FL_ISA(fl_add16)(Ct + r * ldc + v, tile[r] + v);
                }
            }
        }
}
#endif
