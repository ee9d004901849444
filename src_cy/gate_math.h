/* Fused per-row gate math of the recurrence kernels (included by _recurrent.pyx).
 *
 * Why C and not Cython: the scalar libm expf/tanhf calls cost ~10 ns each and were 80%
 * of a small LSTM's step (measured: B=1, H=64, 100 steps, 384 us per forward). These row
 * functions use branch-free float32 exp/tanh that the compiler vectorizes, and are built
 * three times by GCC's target_clones (AVX-512, AVX2+FMA, baseline x86-64) with the CPU
 * picking one at load time: no -march=native, one binary for every x86-64.
 *
 * float64 uses libm's exp/tanh (float64 is for gradient checks; accuracy first).
 * The operation order follows fastlstm/reference.py (and TensorFlow 1.x) line by line.
 */
#ifndef FASTLSTM_GATE_MATH_H
#define FASTLSTM_GATE_MATH_H

#include <math.h>
#include <stdint.h>
#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(FASTLSTM_NO_CLONES)
#define FL_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FL_CLONES
#endif

/* Always inlined, also into the AVX-512 functions of fused_step.h: called out of line
 * from there (GCC does not inline a plain static function into a target("avx512f") one)
 * they were scalar calls, 5x slower. */
#define FL_MATH static inline __attribute__((always_inline))

/* exp(x) for float32, Cephes expf's method: x = n ln2 + r, |r| <= ln2/2, exp(r) by a
 * degree-7 polynomial, 2^n put straight into the exponent bits. Max relative error
 * ~1.3 ulp (tests/test_gate_math.py measures it). The clamp keeps 2^n a normal float:
 * exp saturates at e^88 ~ 1.7e38 and e^-87 ~ 1.6e-38, so sigmoid and tanh built on it
 * reach exactly 1 (and 0 to within 1e-38) as they should; NaN passes through.
 *
 * n = round(x / ln2) uses the 1.5 * 2^23 trick (adding it leaves the rounded integer in
 * the low mantissa bits) instead of a float -> int conversion: GCC will not vectorize
 * the conversion after the clamp ("control flow in loop"), and this is exact for
 * |x / ln2| < 2^22. */
FL_MATH float fl_expf(float x) {
    const float hi = 88.0f, lo = -87.0f;
    const float magic = 12582912.0f;                     /* 1.5 * 2^23, bits 0x4B400000 */
    x = x > hi ? hi : x;
    x = x < lo ? lo : x;
    float t = x * 1.44269504088896341f + magic;           /* x / ln 2, rounded */
    float fn = t - magic;
    int32_t t_bits;
    memcpy(&t_bits, &t, sizeof t_bits);
    int32_t n = t_bits - 0x4B400000;
    float r = x - fn * 0.693359375f;                      /* ln 2 in two parts: */
    r = r - fn * -2.12194440e-4f;                         /* exact first product */
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    int32_t bits = (n + 127) << 23;                        /* 2^n */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

FL_MATH float fl_sigmoidf(float x) { return 1.0f / (1.0f + fl_expf(-x)); }

/* tanh for float32 (Cephes tanhf's method): an odd polynomial near 0, where
 * 1 - 2/(e^2x + 1) would lose relative precision, and that formula elsewhere. */
FL_MATH float fl_tanhf(float x) {
    float ax = x < 0.0f ? -x : x;
    float z = x * x;
    float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z
                     - 5.37397155531e-2f) * z + 1.33314422036e-1f) * z
                   - 3.33332819422e-1f) * z * x + x;
    float big = 1.0f - 2.0f / (fl_expf(2.0f * ax) + 1.0f);
    big = x < 0.0f ? -big : big;
    return ax < 0.625f ? small : big;
}

FL_MATH double fl_sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }

/* The LSTM row bodies take use_peep / use_clip as arguments of always-inline functions
 * that are called with constants only: each (peephole, clip) combination becomes its own
 * branch-free loop, which the compiler vectorizes (a loop with these tests inside it is
 * not vectorized: "control flow in loop"). */
#define FL_INLINE static inline __attribute__((always_inline))

/* One LSTM step for one sequence and n of its units, float32 and float64 from one body.
 * Gate k of unit u sits at [k * S + u] in xp, act, peep (S = H, the full width: these
 * point at unit u0 of a slice) and at [k * Z + u] in z (the GEMM output: Z = H, or the
 * slice width when the hidden units are split over threads).
 *   xp (4 gates): x_t W_x + b     z (4 gates): h_{t-1} W_h     peep (3 rows)
 *   c_loc (n): in c_{t-1}, out c_t     h_loc (n): out h_t
 *   act (4 gates), cs_row (n), hs_row (n), cun_row (n or NULL): the cache of step t. */
#define FL_LSTM_FWD_ROW(NAME, T, SIGMOID, TANH)                                           \
FL_INLINE void NAME##_body(ptrdiff_t n, ptrdiff_t S, ptrdiff_t Z, const T* restrict xp,   \
        const T* restrict z, const T* restrict peep, const int use_peep, T forget_bias,   \
        const int use_clip, T clip, T* restrict c_loc, T* restrict h_loc,                 \
        T* restrict act, T* restrict cs_row, T* restrict hs_row, T* restrict cun_row) {   \
    for (ptrdiff_t u = 0; u < n; u++) {                                                   \
        T z_i = xp[u] + z[u];                                                             \
        T z_j = xp[S + u] + z[Z + u];                                                     \
        T z_f = (xp[2 * S + u] + z[2 * Z + u]) + forget_bias;                             \
        T z_o = xp[3 * S + u] + z[3 * Z + u];                                             \
        T c_prev = c_loc[u];                                                              \
        if (use_peep) {                                                                   \
            z_i = z_i + peep[u] * c_prev;                                                 \
            z_f = z_f + peep[S + u] * c_prev;                                             \
        }                                                                                 \
        T i = SIGMOID(z_i), j = TANH(z_j), f = SIGMOID(z_f);                              \
        T c = f * c_prev + i * j;                                                         \
        if (use_clip) {                                                                   \
            cun_row[u] = c;                                                               \
            c = c > clip ? clip : (c < -clip ? -clip : c);                                \
        }                                                                                 \
        if (use_peep) z_o = z_o + peep[2 * S + u] * c;  /* sees the new cell */           \
        T o = SIGMOID(z_o);                                                               \
        T h = o * TANH(c);                                                                \
        act[u] = i; act[S + u] = j; act[2 * S + u] = f; act[3 * S + u] = o;               \
        cs_row[u] = c; hs_row[u] = h; c_loc[u] = c; h_loc[u] = h;                         \
    }                                                                                     \
}                                                                                         \
FL_CLONES static void NAME(ptrdiff_t n, ptrdiff_t S, ptrdiff_t Z, const T* restrict xp,   \
        const T* restrict z, const T* restrict peep, int use_peep, T forget_bias, T clip, \
        T* restrict c_loc, T* restrict h_loc, T* restrict act, T* restrict cs_row,        \
        T* restrict hs_row, T* restrict cun_row) {                                        \
    if (use_peep && clip > 0)                                                             \
        NAME##_body(n, S, Z, xp, z, peep, 1, forget_bias, 1, clip, c_loc, h_loc, act,     \
                    cs_row, hs_row, cun_row);                                             \
    else if (use_peep)                                                                    \
        NAME##_body(n, S, Z, xp, z, peep, 1, forget_bias, 0, clip, c_loc, h_loc, act,     \
                    cs_row, hs_row, cun_row);                                             \
    else if (clip > 0)                                                                    \
        NAME##_body(n, S, Z, xp, z, peep, 0, forget_bias, 1, clip, c_loc, h_loc, act,     \
                    cs_row, hs_row, cun_row);                                             \
    else                                                                                  \
        NAME##_body(n, S, Z, xp, z, peep, 0, forget_bias, 0, clip, c_loc, h_loc, act,     \
                    cs_row, hs_row, cun_row);                                             \
}

/* Backward of one LSTM step for one sequence and n of its units (gate stride S = H).
 *   act (4 gates), c_prev = cs[t], c_new = cs[t+1], cun (or NULL), d_out: rows at unit u0
 *   dh (n): in dL/dh_t from step t+1     dc (n): in dL/dc_t, out dL/dc_{t-1}
 *   dz_loc, dz_row (4 gates): out dL/d(x_t W_x + b) for the GEMM and for the cache (one
 *   array where they are the same pointer). */
#define FL_LSTM_BWD_ROW(NAME, T, TANH)                                                    \
FL_INLINE void NAME##_body(ptrdiff_t n, ptrdiff_t S, const T* restrict act,               \
        const T* restrict c_prev, const T* restrict c_new, const T* restrict cun,         \
        const T* restrict peep, const int use_peep, const int use_clip, T clip,           \
        const T* restrict d_out, const T* restrict dh, T* restrict dc,                    \
        T* restrict dz_loc, T* restrict dz_row) {                                         \
    for (ptrdiff_t u = 0; u < n; u++) {                                                   \
        T i = act[u], j = act[S + u], f = act[2 * S + u], o = act[3 * S + u];             \
        T dh_t = dh[u] + d_out[u];                                                        \
        T tanh_c = TANH(c_new[u]);                                                        \
        T dz_o = dh_t * tanh_c * o * (1 - o);                                             \
        T dc_t = dc[u] + dh_t * o * (1 - tanh_c * tanh_c);                                \
        if (use_peep) dc_t = dc_t + dz_o * peep[2 * S + u];                               \
        if (use_clip) dc_t = (cun[u] < -clip || cun[u] > clip) ? 0 : dc_t; /* clipped */  \
        T dz_i = dc_t * j * i * (1 - i);                                                  \
        T dz_j = dc_t * i * (1 - j * j);                                                  \
        T dz_f = dc_t * c_prev[u] * f * (1 - f);                                          \
        dc[u] = use_peep ? dc_t * f + dz_i * peep[u] + dz_f * peep[S + u] : dc_t * f;    \
        dz_loc[u] = dz_i; dz_loc[S + u] = dz_j; dz_loc[2 * S + u] = dz_f;                 \
        dz_loc[3 * S + u] = dz_o;                                                         \
    }                                                                                     \
    /* a copy, not a second set of stores in the loop: with eight strided stores GCC 12   \
     * gave up vectorizing it ("no vectype"), and the scalar loop was 62% of a backward;  \
     * none where the caller's product reads dz in the cache (dz_loc == dz_row) */        \
    if (dz_row != dz_loc)                                                                 \
        for (int k = 0; k < 4; k++) memcpy(dz_row + k * S, dz_loc + k * S, n * sizeof(T)); \
}                                                                                         \
FL_CLONES static void NAME(ptrdiff_t n, ptrdiff_t S, const T* restrict act,               \
        const T* restrict c_prev, const T* restrict c_new, const T* restrict cun,         \
        const T* restrict peep, int use_peep, T clip, const T* restrict d_out,            \
        const T* restrict dh, T* restrict dc, T* restrict dz_loc, T* restrict dz_row) {   \
    if (use_peep && clip > 0)                                                             \
        NAME##_body(n, S, act, c_prev, c_new, cun, peep, 1, 1, clip, d_out, dh, dc,       \
                    dz_loc, dz_row);                                                      \
    else if (use_peep)                                                                    \
        NAME##_body(n, S, act, c_prev, c_new, cun, peep, 1, 0, clip, d_out, dh, dc,       \
                    dz_loc, dz_row);                                                      \
    else if (clip > 0)                                                                    \
        NAME##_body(n, S, act, c_prev, c_new, cun, peep, 0, 1, clip, d_out, dh, dc,       \
                    dz_loc, dz_row);                                                      \
    else                                                                                  \
        NAME##_body(n, S, act, c_prev, c_new, cun, peep, 0, 0, clip, d_out, dh, dc,       \
                    dz_loc, dz_row);                                                      \
}

/* Basic RNN: h = tanh(xp + z), and its backward dz = (dh + d_out) (1 - h^2). */
#define FL_RNN_ROWS(FWD, BWD, T, TANH)                                                    \
FL_CLONES static void FWD(ptrdiff_t H, const T* restrict xp, const T* restrict z,               \
        T* restrict h_loc, T* restrict hs_row) {                                          \
    for (ptrdiff_t u = 0; u < H; u++) { T h = TANH(xp[u] + z[u]); h_loc[u] = h; hs_row[u] = h; } \
}                                                                                         \
FL_CLONES static void BWD(ptrdiff_t H, const T* restrict h_new, const T* restrict d_out,        \
        const T* restrict dh, T* restrict dz_loc, T* restrict dz_row) {                   \
    for (ptrdiff_t u = 0; u < H; u++) {                                                         \
        T d = (dh[u] + d_out[u]) * (1 - h_new[u] * h_new[u]);                             \
        dz_loc[u] = d; dz_row[u] = d;                                                     \
    }                                                                                     \
}

FL_LSTM_FWD_ROW(fl_lstm_fwd_row_f32, float, fl_sigmoidf, fl_tanhf)
FL_LSTM_FWD_ROW(fl_lstm_fwd_row_f64, double, fl_sigmoid, tanh)
FL_LSTM_BWD_ROW(fl_lstm_bwd_row_f32, float, fl_tanhf)
FL_LSTM_BWD_ROW(fl_lstm_bwd_row_f64, double, tanh)
FL_RNN_ROWS(fl_rnn_fwd_row_f32, fl_rnn_bwd_row_f32, float, fl_tanhf)
FL_RNN_ROWS(fl_rnn_fwd_row_f64, fl_rnn_bwd_row_f64, double, tanh)

/* Vectorized float32 exp / tanh over an array, for tests/test_gate_math.py. */
FL_CLONES static void fl_expf_array(ptrdiff_t n, const float* x, float* y) {
    for (ptrdiff_t k = 0; k < n; k++) y[k] = fl_expf(x[k]);
}
FL_CLONES static void fl_tanhf_array(ptrdiff_t n, const float* x, float* y) {
    for (ptrdiff_t k = 0; k < n; k++) y[k] = fl_tanhf(x[k]);
}

#endif
