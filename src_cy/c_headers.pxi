# The C headers' declarations (fused_step.h, small_gemm_avx2.h, gate_math.h,
# openmp_shim.h), included first into _recurrent.pyx.

cdef extern from "small_gemm_avx2.h":
    void fl_small_gemm_f32(int m, int n, int k, const float* A, int lda, const float* B,
                           int ldb, float* C, int ldc) noexcept nogil
    enum: FL_SMALL_GEMM_MAX_ROWS

cdef extern from "fused_step.h":
    int fl_best_fused_isa() noexcept nogil
    int fl_cpu_has_avx512_bf16() noexcept nogil
    int fl_cpu_has_amx() noexcept nogil
    int fl_set_amx(int on) noexcept nogil
    long fl_amx_call_count() noexcept nogil
    void fl_pairs_transpose(Py_ssize_t K2, Py_ssize_t M, const uint32_t* src, uint32_t* dst,
                            Py_ssize_t ld, Py_ssize_t m_lo, Py_ssize_t m_hi) noexcept nogil
    void fl_set_fused_isa(int isa) noexcept nogil
    Py_ssize_t fl_l2_bytes() noexcept nogil
    Py_ssize_t fl_set_l2_bytes(Py_ssize_t nbytes) noexcept nogil
    enum: FL_ISA_NONE
    enum: FL_ISA_AVX2
    enum: FL_ISA_AVX512
    ctypedef struct fl_layout_f32:
        Py_ssize_t x_t, x_b
        float* h
        Py_ssize_t h_t, h_b
        float* c
        Py_ssize_t c_t, c_b
    void fl_lstm_fwd_fused_f32(Py_ssize_t n_rows, Py_ssize_t H, const float* h_old,
                               const float* Wp, const int64_t* rows, Py_ssize_t B,
                               Py_ssize_t t, const float* xproj, Py_ssize_t I,
                               const float* x, const float* bias, const float* peep,
                               int use_peep, float forget_bias, float clip, float* c_loc,
                               float* h_new, float* acts, float* act_tmp,
                               const fl_layout_f32* out, float* c_unclipped, Py_ssize_t g_lo,
                               Py_ssize_t g_hi, int bf16) noexcept nogil

cdef extern from "fused_step.h":
    Py_ssize_t FL_PAIRS_LD(Py_ssize_t KP) noexcept nogil
    void fl_pack_fused_f32(Py_ssize_t I, const float* Wx, Py_ssize_t H, const float* Wh,
                           float* out, Py_ssize_t k_lo, Py_ssize_t k_hi) noexcept nogil
    void fl_pack_fused_rect_f32(Py_ssize_t I, const float* Wx, Py_ssize_t H,
                                const float* Wh, float* out, Py_ssize_t k_lo,
                                Py_ssize_t k_hi, Py_ssize_t g_lo,
                                Py_ssize_t g_hi) noexcept nogil
    void fl_pack_fused_t_f32(Py_ssize_t n, Py_ssize_t K, const float* W, float* out,
                             Py_ssize_t c_lo, Py_ssize_t c_hi) noexcept nogil
    void fl_gemm_rows_wt_f32(Py_ssize_t n_rows, const int64_t* rows, Py_ssize_t K,
                             const float* A, Py_ssize_t lda, const float* WTp, Py_ssize_t N,
                             float* C, const int64_t* c_off, Py_ssize_t ldc,
                             Py_ssize_t c_lo, Py_ssize_t c_hi, int bf16) noexcept nogil
    void fl_avx512_math_array(int which, Py_ssize_t n, const float* x,
                              float* y) noexcept nogil
    void fl_avx2_math_array(int which, Py_ssize_t n, const float* x,
                            float* y) noexcept nogil
    void fl_gemm_tn_f32(Py_ssize_t K, const int64_t* krows, Py_ssize_t n_seg,
                        const float* const* A, const Py_ssize_t* lda, const Py_ssize_t* M,
                        const float* B, Py_ssize_t ldb, float* C, Py_ssize_t ldc,
                        Py_ssize_t c_lo, Py_ssize_t c_hi, float* Bp) noexcept nogil
    enum: FL_TN_GROUP
    enum: FL_TN_KS
    void fl_gemm_dz_wt_f32(Py_ssize_t n_rows, Py_ssize_t H, const float* dz,
                           const float* WTp, float* dh, Py_ssize_t c_lo,
                           Py_ssize_t c_hi, int bf16) noexcept nogil
    void fl_pack_fused_bf16(Py_ssize_t I, const float* Wx, Py_ssize_t H, const float* Wh,
                            uint32_t* out, Py_ssize_t g_lo, Py_ssize_t g_hi) noexcept nogil
    void fl_pack_fused_t_bf16(Py_ssize_t n, Py_ssize_t K, const float* W, uint32_t* out,
                              Py_ssize_t c_lo, Py_ssize_t c_hi) noexcept nogil
    void fl_bf16_round_array(Py_ssize_t n, const float* a, float* out) noexcept nogil
    void fl_pack_row_pairs_bf16(Py_ssize_t K_sum, const int64_t* rows, const float* A,
                                Py_ssize_t lda, Py_ssize_t n, uint32_t* out, Py_ssize_t ld,
                                Py_ssize_t m_lo, Py_ssize_t m_hi) noexcept nogil
    void fl_gemm_pairs_bf16(Py_ssize_t K2, const uint32_t* Ap, Py_ssize_t sp, Py_ssize_t sm,
                            const uint32_t* Bp, float* C, Py_ssize_t ldc, Py_ssize_t c_lo,
                            Py_ssize_t c_hi, Py_ssize_t m_lo, Py_ssize_t m_hi) noexcept nogil
    void fl_gemm_pairs_bias_bf16(Py_ssize_t K2, const uint32_t* Ap, Py_ssize_t sp,
                                 Py_ssize_t sm, const uint32_t* Bp, float* C, Py_ssize_t ldc,
                                 Py_ssize_t c_lo, Py_ssize_t c_hi, Py_ssize_t m_lo,
                                 Py_ssize_t m_hi, const float* bias) noexcept nogil
    void fl_pack_pairs_of_rows_bf16(Py_ssize_t K, const float* A, Py_ssize_t lda, uint32_t* Ap,
                                    Py_ssize_t ld, Py_ssize_t m_lo,
                                    Py_ssize_t m_hi) noexcept nogil

cdef extern from "openmp_shim.h":
    int fastlstm_openmp_enabled() noexcept nogil
    int fastlstm_max_threads() noexcept nogil
    int fastlstm_num_threads() noexcept nogil
    ctypedef struct fastlstm_spin_barrier:
        pass
    void fastlstm_spin_barrier_init(fastlstm_spin_barrier* b) noexcept nogil
    void fastlstm_spin_barrier_wait(fastlstm_spin_barrier* b, int n_threads) noexcept nogil
    int fastlstm_spins_before_yield
    int fastlstm_yields_before_sleep
    ctypedef struct fastlstm_slice_steps:
        pass
    void fastlstm_slice_steps_init(fastlstm_slice_steps* p, void* claims,
                                   int n_slices) noexcept nogil
    bint fastlstm_slice_take(fastlstm_slice_steps* p, int s, long long t) noexcept nogil
    void fastlstm_slice_finish(fastlstm_slice_steps* p) noexcept nogil
    int fastlstm_slice_wait(fastlstm_slice_steps* p, long long t, int* patience) noexcept nogil
    int fastlstm_spins_before_steal
    long long fastlstm_steal_count() noexcept nogil
    long long fastlstm_late_count() noexcept nogil
    double fastlstm_wall_clock() noexcept nogil
    double fastlstm_thread_cpu_clock() noexcept nogil
    void fastlstm_check_lost_core(double wall0, double cpu0) noexcept nogil
    void fastlstm_check_stolen(fastlstm_slice_steps* p, long long steps) noexcept nogil
    int fastlstm_late_thread
    int fastlstm_late_us
    void fastlstm_maybe_late(int tid) noexcept nogil

cdef extern from "gate_math.h":
    void fl_lstm_fwd_row_f32(Py_ssize_t n, Py_ssize_t S, Py_ssize_t Z, const float* xp,
                             const float* z, const float* peep, int use_peep,
                             float forget_bias, float clip, float* c_loc, float* h_loc,
                             float* act, float* cs_row, float* hs_row,
                             float* cun_row) noexcept nogil
    void fl_lstm_fwd_row_f64(Py_ssize_t n, Py_ssize_t S, Py_ssize_t Z, const double* xp,
                             const double* z, const double* peep, int use_peep,
                             double forget_bias, double clip, double* c_loc, double* h_loc,
                             double* act, double* cs_row, double* hs_row,
                             double* cun_row) noexcept nogil
    void fl_lstm_bwd_row_f32(Py_ssize_t n, Py_ssize_t S, const float* act,
                             const float* c_prev, const float* c_new, const float* cun,
                             const float* peep, int use_peep, float clip, const float* d_out,
                             const float* dh, float* dc, float* dz_loc,
                             float* dz_row) noexcept nogil
    void fl_lstm_bwd_row_f64(Py_ssize_t n, Py_ssize_t S, const double* act,
                             const double* c_prev, const double* c_new, const double* cun,
                             const double* peep, int use_peep, double clip,
                             const double* d_out, const double* dh, double* dc,
                             double* dz_loc, double* dz_row) noexcept nogil
    void fl_rnn_fwd_row_f32(Py_ssize_t H, const float* xp, const float* z, float* h_loc,
                            float* hs_row) noexcept nogil
    void fl_rnn_fwd_row_f64(Py_ssize_t H, const double* xp, const double* z, double* h_loc,
                            double* hs_row) noexcept nogil
    void fl_rnn_bwd_row_f32(Py_ssize_t H, const float* h_new, const float* d_out,
                            const float* dh, float* dz_loc, float* dz_row) noexcept nogil
    void fl_rnn_bwd_row_f64(Py_ssize_t H, const double* h_new, const double* d_out,
                            const double* dh, double* dz_loc, double* dz_row) noexcept nogil
    void fl_expf_array(Py_ssize_t n, const float* x, float* y) noexcept nogil
    void fl_tanhf_array(Py_ssize_t n, const float* x, float* y) noexcept nogil
