/* The fused step's gate math for one row's 16-unit group, written in AVX-512 intrinsics
 * (included by fused_step.h inside its AVX-512 section).
 *
 * Why not the portable body of gate_math.h, vectorized by GCC: GCC if-converts the
 * clamps and tanh's two branches into masked code, computes the exps under masks, blends
 * in folded constants for the clamped lanes and emits 8 divisions for the 5 the formulas
 * have: 226 instructions and ~118 cycles for 16 units. Here each formula is a straight
 * line: the clamp is one min and one max, both tanh branches are computed and one is
 * selected.
 *
 * Same formulas, same operation order and the same FMA contractions as GCC gives the
 * portable body (fl_expf / fl_sigmoidf / fl_tanhf): results agree with it bit for bit
 * except, at most, in the last bit of lanes saturated by the clamp, where GCC folds
 * constants (tests/test_gate_math.py compares the two and measures the ulp error).
 * NaN passes through: x86's min/max return their second operand when either is NaN,
 * and x is always the second operand. */
#ifndef FASTLSTM_GATE_MATH_AVX512_H
#define FASTLSTM_GATE_MATH_AVX512_H

#include <immintrin.h>
#include <stddef.h>

#define FL_AVX512_MATH                                                                    \
    static inline __attribute__((target("avx512f,avx512dq,fma"), always_inline))

/* exp(x) = p * 2^n (fl_expf): returns p, and 2^n in *scale, so that 1 + exp(x) can be one
 * FMA as GCC makes it of the portable code. */
FL_AVX512_MATH __m512 fl_exp16_parts(__m512 x, __m512* scale) {
    const __m512 magic = _mm512_set1_ps(12582912.0f);             /* 1.5 * 2^23 */
    x = _mm512_min_ps(_mm512_set1_ps(88.0f), x);
    x = _mm512_max_ps(_mm512_set1_ps(-87.0f), x);
    const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), magic);
    const __m512 fn = _mm512_sub_ps(t, magic);
    __m512 r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(fn, _mm512_set1_ps(-2.12194440e-4f), r);
    const __m512 r2 = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), _mm512_set1_ps(1.0f));
    /* 2^n: n + 127 into the exponent bits; t's low mantissa bits hold n + 0x400000 */
    const __m512i n127 = _mm512_add_epi32(_mm512_castps_si512(t),
                                          _mm512_set1_epi32(127 - 0x4B400000));
    *scale = _mm512_castsi512_ps(_mm512_slli_epi32(n127, 23));
    return p;
}

FL_AVX512_MATH __m512 fl_exp16(__m512 x) {
    __m512 scale;
    const __m512 p = fl_exp16_parts(x, &scale);
    return _mm512_mul_ps(p, scale);
}

/* 1 / (1 + exp(-x)) */
FL_AVX512_MATH __m512 fl_sigmoid16(__m512 x) {
    __m512 scale;
    const __m512 p = fl_exp16_parts(_mm512_xor_ps(x, _mm512_set1_ps(-0.0f)), &scale);
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_fmadd_ps(p, scale, one));
}

/* tanh: the odd polynomial where |x| < 0.625, 1 - 2 / (e^2|x| + 1) with x's sign elsewhere */
FL_AVX512_MATH __m512 fl_tanh16(__m512 x) {
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 ax = _mm512_abs_ps(x);
    const __m512 z = _mm512_mul_ps(x, x);
    __m512 q = _mm512_set1_ps(-5.70498872745e-3f);
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(2.06390887954e-2f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-5.37397155531e-2f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(1.33314422036e-1f));
    q = _mm512_fmadd_ps(q, z, _mm512_set1_ps(-3.33332819422e-1f));
    const __m512 small = _mm512_fmadd_ps(_mm512_mul_ps(q, z), x, x);
    __m512 scale;
    const __m512 p = fl_exp16_parts(_mm512_add_ps(ax, ax), &scale);
    __m512 big = _mm512_sub_ps(one, _mm512_div_ps(_mm512_set1_ps(2.0f),
                                                  _mm512_fmadd_ps(p, scale, one)));
    const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
    big = _mm512_mask_xor_ps(big, negative, big, _mm512_set1_ps(-0.0f));
    const __mmask16 near0 = _mm512_cmp_ps_mask(ax, _mm512_set1_ps(0.625f), _CMP_LT_OQ);
    return _mm512_mask_blend_ps(near0, big, small);
}

/* One LSTM step for n <= 16 units of one row, the formulas and arguments of
 * fl_lstm_fwd_row_f32_body (gate_math.h) with Z = 16; lanes past n are neither read nor
 * written. use_peep / use_clip are constants where this is inlined. */
FL_AVX512_MATH void fl_lstm_gates16(
        ptrdiff_t n, ptrdiff_t S, const float* restrict xp, const float* restrict z,
        const float* restrict peep, const int use_peep, float forget_bias,
        const int use_clip, float clip, float* restrict c_loc, float* restrict h_loc,
        float* restrict act, float* restrict cs_row, float* restrict hs_row,
        float* restrict cun_row) {
    const __mmask16 m = (__mmask16)(n >= 16 ? 0xFFFF : (1u << n) - 1u);
#define FL_LD(p) _mm512_maskz_loadu_ps(m, p)
    __m512 z_i = _mm512_add_ps(FL_LD(xp), FL_LD(z));
    const __m512 z_j = _mm512_add_ps(FL_LD(xp + S), FL_LD(z + 16));
    __m512 z_f = _mm512_add_ps(_mm512_add_ps(FL_LD(xp + 2 * S), FL_LD(z + 32)),
                               _mm512_set1_ps(forget_bias));
    __m512 z_o = _mm512_add_ps(FL_LD(xp + 3 * S), FL_LD(z + 48));
    const __m512 c_prev = FL_LD(c_loc);
    if (use_peep) {
        z_i = _mm512_fmadd_ps(FL_LD(peep), c_prev, z_i);
        z_f = _mm512_fmadd_ps(FL_LD(peep + S), c_prev, z_f);
    }
    const __m512 i = fl_sigmoid16(z_i), j = fl_tanh16(z_j), f = fl_sigmoid16(z_f);
    __m512 c = _mm512_fmadd_ps(i, j, _mm512_mul_ps(f, c_prev));
    if (use_clip) {
        _mm512_mask_storeu_ps(cun_row, m, c);
        c = _mm512_min_ps(_mm512_set1_ps(clip), _mm512_max_ps(_mm512_set1_ps(-clip), c));
    }
    if (use_peep) z_o = _mm512_fmadd_ps(FL_LD(peep + 2 * S), c, z_o);   /* the new cell */
#undef FL_LD
    const __m512 o = fl_sigmoid16(z_o);
    const __m512 h = _mm512_mul_ps(o, fl_tanh16(c));
    _mm512_mask_storeu_ps(act, m, i);
    _mm512_mask_storeu_ps(act + S, m, j);
    _mm512_mask_storeu_ps(act + 2 * S, m, f);
    _mm512_mask_storeu_ps(act + 3 * S, m, o);
    _mm512_mask_storeu_ps(cs_row, m, c);
    _mm512_mask_storeu_ps(hs_row, m, h);
    _mm512_mask_storeu_ps(c_loc, m, c);
    _mm512_mask_storeu_ps(h_loc, m, h);
}

#endif
