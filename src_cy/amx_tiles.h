/* The bfloat16 products' GEMM on AMX tiles (Intel Xeon since Sapphire Rapids: AMX-TILE
 * and AMX-BF16), C = A B over pair rows, the contract of fl_gemm_pairs_bf16
 * (fused_tiles_bf16.h) for an A whose rows hold their pairs contiguously.
 *
 * Why: on those Xeons vdpbf16ps issues on one port, so the AVX512-BF16 tiles do no more
 * multiply-adds per cycle than float32 FMAs, and compute_dtype="bfloat16" ran slower
 * than float32 (the packing is extra work). One tdpbf16ps multiplies a 16 x 32 bfloat16
 * tile by a 32 x 16 one into a 16 x 16 float32 tile.
 *
 * The pair-row layouts are already AMX's: a B tile is 16 pair rows x 16 dwords of a
 * 64-column block (rows 256 bytes apart), an A tile 16 rows x 16 pairs. C is tiled 2 x 2
 * (32 rows x 32 columns in tiles 0-3, A in 4-5, B in 6-7) and every element sums its pair
 * rows in tiles of 16, in order, then the last K2 % 16 in one tile configured that short:
 * the same bits for any split of C's rows or columns. The order inside a tile is the
 * hardware's, so the bits differ from the AVX512-BF16 tiles' (both are exact products
 * summed in float32; the tests compare each with float64 sums of the rounded operands).
 *
 * Linux gives a process the AMX register state only on request (arch_prctl), made once at
 * import (fl_amx_request); the tiles are configured at the start of each call and
 * released at its end, so threads need no setup and idle threads hold no tile state. */
#ifndef FASTLSTM_AMX_TILES_H
#define FASTLSTM_AMX_TILES_H

#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

/* The compilers whose intrinsics name the tiles (GCC 11, clang 12); with older ones the
 * build has no AMX path and the AVX512-BF16 tiles run everywhere. */
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11)
#define FL_HAVE_AMX_BUILD 1
#else
#define FL_HAVE_AMX_BUILD 0
#endif

/* The row stride of pair buffers, FL_PAIRS_LD, is in fused_step.h (built everywhere). */

/* Set once at import (fl_set_amx) where the CPU has AMX-BF16 and the OS granted it. */
static int fl_amx_on = 0;
/* Calls of fl_gemm_pairs_amx since import: the test that the AMX path ran reads it. */
static long fl_amx_calls = 0;

/* Ask Linux for the tile data state (XTILEDATA, feature 18) for this process; 1 when it
 * is granted. */
static int fl_amx_request(void) {
#if defined(__linux__) && defined(SYS_arch_prctl) && FL_HAVE_AMX_BUILD
    unsigned long granted = 0;
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18)) return 0;
    if (syscall(SYS_arch_prctl, 0x1022 /* ARCH_GET_XCOMP_PERM */, &granted)) return 0;
    return (int)((granted >> 18) & 1);
#else
    return 0;
#endif
}

/* Bytes of B's pair rows that one pass over C's rows reads (a quarter of a 2 MB L2). */
#define FL_AMX_B_BYTES (512 * 1024)

#if FL_HAVE_AMX_BUILD
#define FL_AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} fl_amx_config;

/* C tiles 0, 1 (ra0 rows) and 2, 3 (ra1 rows), A tiles 4 (ra0 rows) and 5 (ra1) of kp
 * pairs, B tiles 6, 7 of kp pair rows; ra1 = 0 leaves 2, 3 and 5 unconfigured. */
FL_AMX_TARGET
static void fl_amx_configure(int ra0, int ra1, int kp) {
    fl_amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    const int rows[8] = {ra0, ra0, ra1, ra1, ra0, ra1, kp, kp};
    const int colsb[8] = {64, 64, 64, 64, 4 * kp, 4 * kp, 64, 64};
    for (int i = 0; i < 8; i++)
        if (rows[i]) {
            cfg.rows[i] = (uint8_t)rows[i];
            cfg.colsb[i] = (uint16_t)colsb[i];
        }
    /* not _tile_loadconfig: GCC 12 drops the stores of rows and colsb before it as dead
     * (it sees the builtin read 16 bytes), and ldtilecfg faults on the garbage */
    __asm__ volatile("ldtilecfg %0" : : "m"(cfg) : "memory");
}

/* C (rows m_lo .. m_hi - 1, columns of blocks c_lo .. c_hi - 1, rows ldc floats apart) =
 * A B over K2 pair rows: A's pair (m, p) at Ap[m * sm + p], B in blocks of 64 columns
 * (block c: K2 pair rows of 64 dwords at Bp + c * K2 * 64). */
FL_AMX_TARGET
static void fl_gemm_pairs_amx(ptrdiff_t K2, const uint32_t* Ap, ptrdiff_t sm,
                              const uint32_t* Bp, float* C, ptrdiff_t ldc, ptrdiff_t c_lo,
                              ptrdiff_t c_hi, ptrdiff_t m_lo, ptrdiff_t m_hi) {
    const ptrdiff_t full = K2 / 16 * 16;
    const size_t sa = (size_t)sm * 4, sc = (size_t)ldc * 4;
    /* B's blocks in groups of about FL_AMX_B_BYTES, each group read from L2 by all rows
     * (one block at a time streamed all of B from L3 once per 32 rows: 858 GFLOP/s for
     * (1600 x 1024) (1024 x 4096), 2 threads) */
    const ptrdiff_t group = K2 * 256 >= FL_AMX_B_BYTES ? 1 : FL_AMX_B_BYTES / (K2 * 256);
    __atomic_fetch_add(&fl_amx_calls, 1, __ATOMIC_RELAXED);
    for (ptrdiff_t g0 = c_lo; g0 < c_hi; g0 += group) {
    const ptrdiff_t g1 = c_hi - g0 < group ? c_hi : g0 + group;
    for (ptrdiff_t m0 = m_lo; m0 < m_hi; m0 += 32) {
        const ptrdiff_t left = m_hi - m0;
        const int ra0 = left < 16 ? (int)left : 16;
        const int ra1 = left <= 16 ? 0 : left < 32 ? (int)left - 16 : 16;
        const uint32_t* A0 = Ap + m0 * sm;
        const uint32_t* A1 = A0 + 16 * sm;
        /* the full tiles of pairs, then (C reloaded) the short last one */
        for (int last = 0; last < 2; last++) {
            const ptrdiff_t p_lo = last ? full : 0, p_hi = last ? K2 : full;
            if (p_hi == p_lo) continue;
            fl_amx_configure(ra0, ra1, last ? (int)(K2 - full) : 16);
            for (ptrdiff_t c = g0; c < g1; c++)
                for (ptrdiff_t j0 = 0; j0 < 64; j0 += 32) {
                    float* C0 = C + m0 * ldc + 64 * c + j0;
                    float* C1 = C0 + 16 * ldc;
                    const uint32_t* B = Bp + c * K2 * 64 + j0;
                    if (p_lo) {
                        _tile_loadd(0, C0, sc);
                        _tile_loadd(1, C0 + 16, sc);
                        if (ra1) {
                            _tile_loadd(2, C1, sc);
                            _tile_loadd(3, C1 + 16, sc);
                        }
                    } else {
                        _tile_zero(0);
                        _tile_zero(1);
                        if (ra1) {
                            _tile_zero(2);
                            _tile_zero(3);
                        }
                    }
                    for (ptrdiff_t p = p_lo; p < p_hi; p += 16) {
                        _tile_loadd(4, A0 + p, sa);
                        _tile_loadd(6, B + p * 64, 256);
                        _tile_loadd(7, B + p * 64 + 16, 256);
                        _tile_dpbf16ps(0, 4, 6);
                        _tile_dpbf16ps(1, 4, 7);
                        if (ra1) {
                            _tile_loadd(5, A1 + p, sa);
                            _tile_dpbf16ps(2, 5, 6);
                            _tile_dpbf16ps(3, 5, 7);
                        }
                    }
                    _tile_stored(0, C0, sc);
                    _tile_stored(1, C0 + 16, sc);
                    if (ra1) {
                        _tile_stored(2, C1, sc);
                        _tile_stored(3, C1 + 16, sc);
                    }
                }
        }
    }
    }
    _tile_release();
}

#else
static void fl_gemm_pairs_amx(ptrdiff_t K2, const uint32_t* Ap, ptrdiff_t sm,
                              const uint32_t* Bp, float* C, ptrdiff_t ldc, ptrdiff_t c_lo,
                              ptrdiff_t c_hi, ptrdiff_t m_lo, ptrdiff_t m_hi) {}
#endif

/* dst[m * ld + p] = src[p * M + m]: pair rows (K2 x M) turned into rows of pairs
 * (M x K2), the layout of fl_gemm_pairs_amx's A; rows m_lo .. m_hi - 1 of dst, in 16 x 16
 * blocks so both sides stay in L1. */
static void fl_pairs_transpose(ptrdiff_t K2, ptrdiff_t M, const uint32_t* src, uint32_t* dst,
                               ptrdiff_t ld, ptrdiff_t m_lo, ptrdiff_t m_hi) {
    for (ptrdiff_t m0 = m_lo; m0 < m_hi; m0 += 16)
        for (ptrdiff_t p0 = 0; p0 < K2; p0 += 16) {
            const ptrdiff_t m1 = m_hi - m0 < 16 ? m_hi : m0 + 16;
            const ptrdiff_t p1 = K2 - p0 < 16 ? K2 : p0 + 16;
            for (ptrdiff_t m = m0; m < m1; m++)
                for (ptrdiff_t p = p0; p < p1; p++) dst[m * ld + p] = src[p * M + m];
        }
}

#endif
