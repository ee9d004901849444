/* The fused step's gate math in AVX2 + FMA intrinsics, for CPUs without AVX-512
 * (included by fused_tiles_avx2.h).
 *
 * The same formulas as gate_math_avx512.h, operation for operation, on 8 lanes instead
 * of 16: the same clamps (min / max with x the second operand, so NaN passes through),
 * the same FMA contractions, IEEE division, both tanh branches computed and one selected.
 * Every operation is lane-wise, so a lane gets the same bits on either ISA
 * (tests/test_gate_math.py compares the two where the CPU has both). A 16-unit group is
 * two 8-lane halves; lanes past n are neither read nor written: maskload / maskstore in
 * a partial half only, since a masked store is microcoded on AMD Zen 1-3 (with them in
 * every half the gate math was a third of the seed-size inference on a Zen 3 EPYC). */
#ifndef FASTLSTM_GATE_MATH_AVX2_H
#define FASTLSTM_GATE_MATH_AVX2_H

#include <immintrin.h>
#include <stddef.h>

#define FL_AVX2_MATH static inline __attribute__((target("avx2,fma"), always_inline))

/* exp(x) = p * 2^n (fl_expf): p, and 2^n in *scale (fl_exp16_parts on 8 lanes) */
FL_AVX2_MATH __m256 fl_exp8_parts(__m256 x, __m256* scale) {
    const __m256 magic = _mm256_set1_ps(12582912.0f);             /* 1.5 * 2^23 */
    x = _mm256_min_ps(_mm256_set1_ps(88.0f), x);
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), magic);
    const __m256 fn = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fn, _mm256_set1_ps(-2.12194440e-4f), r);
    const __m256 r2 = _mm256_mul_ps(r, r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
    const __m256i n127 = _mm256_add_epi32(_mm256_castps_si256(t),
                                          _mm256_set1_epi32(127 - 0x4B400000));
    *scale = _mm256_castsi256_ps(_mm256_slli_epi32(n127, 23));
    return p;
}

FL_AVX2_MATH __m256 fl_exp8(__m256 x) {
    __m256 scale;
    const __m256 p = fl_exp8_parts(x, &scale);
    return _mm256_mul_ps(p, scale);
}

/* 1 / (1 + exp(-x)) */
FL_AVX2_MATH __m256 fl_sigmoid8(__m256 x) {
    __m256 scale;
    const __m256 p = fl_exp8_parts(_mm256_xor_ps(x, _mm256_set1_ps(-0.0f)), &scale);
    const __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_div_ps(one, _mm256_fmadd_ps(p, scale, one));
}

/* tanh: the odd polynomial where |x| < 0.625, 1 - 2 / (e^2|x| + 1) with x's sign elsewhere */
FL_AVX2_MATH __m256 fl_tanh8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
    const __m256 ax = _mm256_andnot_ps(sign, x);
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 q = _mm256_set1_ps(-5.70498872745e-3f);
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(2.06390887954e-2f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(-5.37397155531e-2f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(1.33314422036e-1f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(-3.33332819422e-1f));
    const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(q, z), x, x);
    __m256 scale;
    const __m256 p = fl_exp8_parts(_mm256_add_ps(ax, ax), &scale);
    __m256 big = _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f),
                                                  _mm256_fmadd_ps(p, scale, one)));
    const __m256 negative = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
    big = _mm256_xor_ps(big, _mm256_and_ps(negative, sign));
    const __m256 near0 = _mm256_cmp_ps(ax, _mm256_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm256_blendv_ps(big, small, near0);
}

/* Lanes 0 .. n - 1 of 8 (n <= 0: none), as maskload / maskstore want them. */
FL_AVX2_MATH __m256i fl_lanes8(ptrdiff_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)),
                              _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* One LSTM step for n <= 8 units of one row: fl_lstm_gates16 (gate_math_avx512.h) on 8
 * lanes; z holds the row's gate sums 16 floats apart (one half of a 16-unit group).
 * full (a constant where inlined): n >= 8, plain loads and stores. */
FL_AVX2_MATH void fl_lstm_gates8(
        ptrdiff_t n, ptrdiff_t S, const float* restrict xp, const float* restrict z,
        const float* restrict peep, const int use_peep, float forget_bias,
        const int use_clip, float clip, float* restrict c_loc, float* restrict h_loc,
        float* restrict act, float* restrict cs_row, float* restrict hs_row,
        float* restrict cun_row, const int full) {
    const __m256i m = fl_lanes8(n);
#define FL_LD(p) (full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, m))
#define FL_ST(p, v) (full ? _mm256_storeu_ps(p, v) : _mm256_maskstore_ps(p, m, v))
    __m256 z_i = _mm256_add_ps(FL_LD(xp), FL_LD(z));
    const __m256 z_j = _mm256_add_ps(FL_LD(xp + S), FL_LD(z + 16));
    __m256 z_f = _mm256_add_ps(_mm256_add_ps(FL_LD(xp + 2 * S), FL_LD(z + 32)),
                               _mm256_set1_ps(forget_bias));
    __m256 z_o = _mm256_add_ps(FL_LD(xp + 3 * S), FL_LD(z + 48));
    const __m256 c_prev = FL_LD(c_loc);
    if (use_peep) {
        z_i = _mm256_fmadd_ps(FL_LD(peep), c_prev, z_i);
        z_f = _mm256_fmadd_ps(FL_LD(peep + S), c_prev, z_f);
    }
    const __m256 i = fl_sigmoid8(z_i), j = fl_tanh8(z_j), f = fl_sigmoid8(z_f);
    __m256 c = _mm256_fmadd_ps(i, j, _mm256_mul_ps(f, c_prev));
    if (use_clip) {
        FL_ST(cun_row, c);
        c = _mm256_min_ps(_mm256_set1_ps(clip), _mm256_max_ps(_mm256_set1_ps(-clip), c));
    }
    if (use_peep) z_o = _mm256_fmadd_ps(FL_LD(peep + 2 * S), c, z_o);   /* the new cell */
#undef FL_LD
    const __m256 o = fl_sigmoid8(z_o);
    const __m256 h = _mm256_mul_ps(o, fl_tanh8(c));
    FL_ST(act, i);
    FL_ST(act + S, j);
    FL_ST(act + 2 * S, f);
    FL_ST(act + 3 * S, o);
    FL_ST(cs_row, c);
    FL_ST(hs_row, h);
    FL_ST(c_loc, c);
    FL_ST(h_loc, h);
#undef FL_ST
}

/* fl_lstm_gates8 on both halves of a full 16-unit group, each statement for both halves
 * in turn: the halves' long latency chains (exp, division, then tanh of the new cell)
 * overlap, where one half after the other left the FMA pipes mostly waiting. The same
 * operations per lane: the same bits. */
FL_AVX2_MATH void fl_lstm_gates8x2(
        ptrdiff_t S, const float* restrict xp, const float* restrict z,
        const float* restrict peep, const int use_peep, float forget_bias,
        const int use_clip, float clip, float* restrict c_loc, float* restrict h_loc,
        float* restrict act, float* restrict cs_row, float* restrict hs_row,
        float* restrict cun_row) {
    __m256 z_i[2], z_j[2], z_f[2], z_o[2], c_prev[2], i[2], j[2], f[2], c[2], o[2], h[2];
#define FL_HALVES for (ptrdiff_t q = 0, u = 0; q < 2; q++, u += 8)
    FL_HALVES {
        z_i[q] = _mm256_add_ps(_mm256_loadu_ps(xp + u), _mm256_loadu_ps(z + u));
        z_j[q] = _mm256_add_ps(_mm256_loadu_ps(xp + S + u), _mm256_loadu_ps(z + 16 + u));
        z_f[q] = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(xp + 2 * S + u),
                                             _mm256_loadu_ps(z + 32 + u)),
                               _mm256_set1_ps(forget_bias));
        z_o[q] = _mm256_add_ps(_mm256_loadu_ps(xp + 3 * S + u), _mm256_loadu_ps(z + 48 + u));
        c_prev[q] = _mm256_loadu_ps(c_loc + u);
    }
    if (use_peep)
        FL_HALVES {
            z_i[q] = _mm256_fmadd_ps(_mm256_loadu_ps(peep + u), c_prev[q], z_i[q]);
            z_f[q] = _mm256_fmadd_ps(_mm256_loadu_ps(peep + S + u), c_prev[q], z_f[q]);
        }
    FL_HALVES i[q] = fl_sigmoid8(z_i[q]);
    FL_HALVES j[q] = fl_tanh8(z_j[q]);
    FL_HALVES f[q] = fl_sigmoid8(z_f[q]);
    FL_HALVES c[q] = _mm256_fmadd_ps(i[q], j[q], _mm256_mul_ps(f[q], c_prev[q]));
    if (use_clip)
        FL_HALVES {
            _mm256_storeu_ps(cun_row + u, c[q]);
            c[q] = _mm256_min_ps(_mm256_set1_ps(clip),
                                 _mm256_max_ps(_mm256_set1_ps(-clip), c[q]));
        }
    if (use_peep)                                                       /* the new cell */
        FL_HALVES z_o[q] = _mm256_fmadd_ps(_mm256_loadu_ps(peep + 2 * S + u), c[q], z_o[q]);
    FL_HALVES o[q] = fl_sigmoid8(z_o[q]);
    FL_HALVES h[q] = _mm256_mul_ps(o[q], fl_tanh8(c[q]));
    FL_HALVES {
        _mm256_storeu_ps(act + u, i[q]);
        _mm256_storeu_ps(act + S + u, j[q]);
        _mm256_storeu_ps(act + 2 * S + u, f[q]);
        _mm256_storeu_ps(act + 3 * S + u, o[q]);
        _mm256_storeu_ps(cs_row + u, c[q]);
        _mm256_storeu_ps(hs_row + u, h[q]);
        _mm256_storeu_ps(c_loc + u, c[q]);
        _mm256_storeu_ps(h_loc + u, h[q]);
    }
#undef FL_HALVES
}

/* fl_lstm_gates16's contract (n <= 16 units of one row) as two 8-lane halves. */
FL_AVX2_MATH void fl_lstm_gates16_avx2(
        ptrdiff_t n, ptrdiff_t S, const float* restrict xp, const float* restrict z,
        const float* restrict peep, const int use_peep, float forget_bias,
        const int use_clip, float clip, float* restrict c_loc, float* restrict h_loc,
        float* restrict act, float* restrict cs_row, float* restrict hs_row,
        float* restrict cun_row) {
    if (n == 16) {
        fl_lstm_gates8x2(S, xp, z, peep, use_peep, forget_bias, use_clip, clip, c_loc, h_loc,
                         act, cs_row, hs_row, cun_row);
        return;
    }
    for (ptrdiff_t u = 0; u < n; u += 8) {
        float* const cun = use_clip ? cun_row + u : cun_row;
        if (n - u >= 8)
            fl_lstm_gates8(8, S, xp + u, z + u, peep + u, use_peep, forget_bias, use_clip,
                           clip, c_loc + u, h_loc + u, act + u, cs_row + u, hs_row + u, cun,
                           1);
        else
            fl_lstm_gates8(n - u, S, xp + u, z + u, peep + u, use_peep, forget_bias,
                           use_clip, clip, c_loc + u, h_loc + u, act + u, cs_row + u,
                           hs_row + u, cun, 0);
    }
}

#endif
