/* The GRU's elementwise step for one sequence, float32 and float64 from one body (the
 * products around it are BLAS calls of src_cy/gru_kernels.pxi). Gate order (r, u, c);
 * gate k of unit u at [k * H + u] in xp, z, act, dzh.
 *   reset_after:  z = h W (3H, without b_h), c = tanh(xp_c + r * (z_c + b_hc))
 *   otherwise:    z = h W_ru (2H), then g = (r * h) W_c (H), c = tanh(xp_c + g)
 * h' = u * h + (1 - u) * c, TensorFlow's order. act == NULL: inference, nothing kept. */
#ifndef FASTLSTM_GRU_ROWS_H
#define FASTLSTM_GRU_ROWS_H

#include "gate_math.h"

#define FL_GRU_ROWS(SFX, T, SIGMOID, TANH)                                                  \
FL_INLINE void fl_gru_fwd_ra_body_##SFX(ptrdiff_t H, const T* restrict xp,                 \
        const T* restrict z, const T* restrict b_h, T* restrict h_loc, T* restrict act,    \
        T* restrict hzc_row, T* restrict hs_row, int store) {                              \
    for (ptrdiff_t u = 0; u < H; u++) {                                                    \
        T r = SIGMOID(xp[u] + (z[u] + b_h[u]));                                            \
        T g = SIGMOID(xp[H + u] + (z[H + u] + b_h[H + u]));                                \
        T hz_c = z[2 * H + u] + b_h[2 * H + u];                                            \
        T c = TANH(xp[2 * H + u] + r * hz_c);                                              \
        T h = g * h_loc[u] + (1 - g) * c;                                                  \
        if (store) {                                                                       \
            act[u] = r; act[H + u] = g; act[2 * H + u] = c; hzc_row[u] = hz_c;             \
        }                                                                                  \
        h_loc[u] = h; hs_row[u] = h;                                                       \
    }                                                                                      \
}                                                                                          \
FL_CLONES static void fl_gru_fwd_ra_row_##SFX(ptrdiff_t H, const T* xp, const T* z,        \
        const T* b_h, T* h_loc, T* act, T* hzc_row, T* hs_row) {                           \
    if (act) fl_gru_fwd_ra_body_##SFX(H, xp, z, b_h, h_loc, act, hzc_row, hs_row, 1);      \
    else fl_gru_fwd_ra_body_##SFX(H, xp, z, b_h, h_loc, act, hzc_row, hs_row, 0);          \
}                                                                                          \
/* reset_after=False, before (r * h) W_c: the gates, u kept for the candidate step */      \
FL_INLINE void fl_gru_fwd_gates_body_##SFX(ptrdiff_t H, const T* restrict xp,              \
        const T* restrict z, const T* restrict h_loc, T* restrict act, T* restrict u_loc,  \
        T* restrict rh_loc, int store) {                                                   \
    for (ptrdiff_t u = 0; u < H; u++) {                                                    \
        T r = SIGMOID(xp[u] + z[u]);                                                       \
        T g = SIGMOID(xp[H + u] + z[H + u]);                                               \
        if (store) { act[u] = r; act[H + u] = g; }                                         \
        u_loc[u] = g; rh_loc[u] = r * h_loc[u];                                            \
    }                                                                                      \
}                                                                                          \
FL_CLONES static void fl_gru_fwd_gates_row_##SFX(ptrdiff_t H, const T* xp, const T* z,     \
        const T* h_loc, T* act, T* u_loc, T* rh_loc) {                                     \
    if (act) fl_gru_fwd_gates_body_##SFX(H, xp, z, h_loc, act, u_loc, rh_loc, 1);          \
    else fl_gru_fwd_gates_body_##SFX(H, xp, z, h_loc, act, u_loc, rh_loc, 0);              \
}                                                                                          \
/* ... and after it: the candidate and the new h */                                        \
FL_INLINE void fl_gru_fwd_cand_body_##SFX(ptrdiff_t H, const T* restrict xp,               \
        const T* restrict g, const T* restrict u_loc, T* restrict h_loc,                   \
        T* restrict act, T* restrict hs_row, int store) {                                  \
    for (ptrdiff_t u = 0; u < H; u++) {                                                    \
        T c = TANH(xp[2 * H + u] + g[u]);                                                  \
        T h = u_loc[u] * h_loc[u] + (1 - u_loc[u]) * c;                                    \
        if (store) act[2 * H + u] = c;                                                     \
        h_loc[u] = h; hs_row[u] = h;                                                       \
    }                                                                                      \
}                                                                                          \
FL_CLONES static void fl_gru_fwd_cand_row_##SFX(ptrdiff_t H, const T* xp, const T* g,      \
        const T* u_loc, T* h_loc, T* act, T* hs_row) {                                     \
    if (act) fl_gru_fwd_cand_body_##SFX(H, xp, g, u_loc, h_loc, act, hs_row, 1);           \
    else fl_gru_fwd_cand_body_##SFX(H, xp, g, u_loc, h_loc, act, hs_row, 0);               \
}                                                                                          \
/* Backward, reset_after: dz (3H) of the step, dzh = [dz_r, dz_u, r dz_c] for the one     \
 * product dzh W^T, and dhu = dh_t u, the direct part of dh_{t-1}. */                      \
FL_CLONES static void fl_gru_bwd_ra_row_##SFX(ptrdiff_t H, const T* restrict act,          \
        const T* restrict hzc, const T* restrict h_prev, const T* restrict d_out,          \
        const T* restrict dh, T* restrict dzh, T* restrict dhu, T* restrict dz_row) {      \
    for (ptrdiff_t u = 0; u < H; u++) {                                                    \
        T r = act[u], g = act[H + u], c = act[2 * H + u];                                  \
        T dh_t = dh[u] + d_out[u];                                                         \
        T dz_c = dh_t * (1 - g) * (1 - c * c);                                             \
        T dz_u = dh_t * (h_prev[u] - c) * g * (1 - g);                                     \
        T dz_r = dz_c * hzc[u] * r * (1 - r);                                              \
        dz_row[u] = dz_r; dz_row[H + u] = dz_u; dz_row[2 * H + u] = dz_c;                  \
        dzh[u] = dz_r; dzh[H + u] = dz_u; dzh[2 * H + u] = dz_c * r;                       \
        dhu[u] = dh_t * g;                                                                 \
    }                                                                                      \
}                                                                                          \
/* Backward, reset_after=False, before d(r h) = dz_c W_c^T: dz_u, dz_c */                  \
FL_CLONES static void fl_gru_bwd_cand_row_##SFX(ptrdiff_t H, const T* restrict act,        \
        const T* restrict h_prev, const T* restrict d_out, const T* restrict dh,           \
        T* restrict dzc, T* restrict dzru, T* restrict dhu, T* restrict dz_row) {          \
    for (ptrdiff_t u = 0; u < H; u++) {                                                    \
        T g = act[H + u], c = act[2 * H + u];                                              \
        T dh_t = dh[u] + d_out[u];                                                         \
        T dz_c = dh_t * (1 - g) * (1 - c * c);                                             \
        T dz_u = dh_t * (h_prev[u] - c) * g * (1 - g);                                     \
        dz_row[H + u] = dz_u; dz_row[2 * H + u] = dz_c;                                    \
        dzc[u] = dz_c; dzru[H + u] = dz_u; dhu[u] = dh_t * g;                              \
    }                                                                                      \
}                                                                                          \
/* ... and after it: dz_r, and the part of dh_{t-1} through r * h */                       \
FL_CLONES static void fl_gru_bwd_reset_row_##SFX(ptrdiff_t H, const T* restrict act,       \
        const T* restrict h_prev, const T* restrict drh, T* restrict dzru,                 \
        T* restrict dhu, T* restrict dz_row) {                                             \
    for (ptrdiff_t u = 0; u < H; u++) {                                                    \
        T r = act[u];                                                                      \
        T dz_r = drh[u] * h_prev[u] * r * (1 - r);                                         \
        dz_row[u] = dz_r; dzru[u] = dz_r; dhu[u] = dhu[u] + drh[u] * r;                    \
    }                                                                                      \
}

FL_GRU_ROWS(f32, float, fl_sigmoidf, fl_tanhf)
FL_GRU_ROWS(f64, double, fl_sigmoid, tanh)

#endif
