# Which instruction set the kernels run on: detected once at import, switched by
# FASTLSTM_NO_FUSED / FASTLSTM_NO_AVX512 / FASTLSTM_NO_SMALL_GEMM / FASTLSTM_NO_AMX.

def _kernel_isa():
    """The instruction set of this process's own float32 kernels: the CPU's best
    (fl_best_fused_isa: AVX-512, AVX2 + FMA, or none), or AVX2 on an AVX-512 CPU where
    FASTLSTM_NO_AVX512=1 at import (to measure or compare the kernels of CPUs without
    AVX-512 on one machine)."""
    cdef int isa = fl_best_fused_isa()
    if isa == FL_ISA_AVX512 and os.environ.get("FASTLSTM_NO_AVX512", "") == "1":
        isa = FL_ISA_AVX2
    return isa


cdef int _KERNEL_ISA = _kernel_isa()
#: The fused float32 LSTM kernels (fused_step.h) run on _KERNEL_ISA, unless
#: FASTLSTM_NO_FUSED=1 at import puts every product on the BLAS path.
cdef int _FUSED_ISA = (FL_ISA_NONE if os.environ.get("FASTLSTM_NO_FUSED", "") == "1"
                       else _KERNEL_ISA)
fl_set_fused_isa(_FUSED_ISA)
_FUSED_STEP = _FUSED_ISA != FL_ISA_NONE


#: The BLAS path's per-step products of 2 .. FL_SMALL_GEMM_MAX_ROWS rows (the basic RNN,
#: and every float32 product where FASTLSTM_NO_FUSED=1) run on small_gemm_avx2.h where
#: the kernels' ISA is AVX2 (no AVX-512, or it switched off by FASTLSTM_NO_AVX512=1),
#: since OpenBLAS's sgemm packs all of W_h for each of them.
#: Measured (2 threads, ms, BLAS / small GEMM) with OpenBLAS's Haswell kernels: (8, 100,
#: 64, 128) inference 2.94 / 1.12, training 6.97 / 5.06, (4, ...) 2.68 / 1.08, basic RNN
#: (8, 100, 64, 128) 0.93 / 0.36, (32, 100, 64, 64) 2.00 / 1.59, larger batches 0.99-1.11x;
#: but OpenBLAS's SkylakeX kernels beat it (0.75 / 1.37 at (8, 100, 64, 128)): not on
#: AVX-512 CPUs. FASTLSTM_NO_SMALL_GEMM=1 at import leaves every product to BLAS.
cdef bint _SMALL_GEMM = (_KERNEL_ISA == FL_ISA_AVX2
                         and os.environ.get("FASTLSTM_NO_SMALL_GEMM", "") != "1")


def small_gemm_enabled():
    """True when the BLAS path's few-row float32 products run on the AVX2 kernel."""
    return bool(_SMALL_GEMM)


def have_fused_step():
    """True when the fused float32 kernels run here (fused_step.h): the CPU has AVX-512F,
    or AVX2 and FMA, and FASTLSTM_NO_FUSED=1 was not set at import."""
    return _FUSED_STEP


def fused_isa():
    """The fused kernels' instruction set here: ``"avx512"``, ``"avx2"`` or ``None``
    (the BLAS path)."""
    return {FL_ISA_AVX512: "avx512", FL_ISA_AVX2: "avx2"}.get(_FUSED_ISA)


def l2_cache_bytes():
    """Bytes of one core's L2 cache as the fused kernels plan for it (glibc's
    ``sysconf``, read once; 1 MB where it cannot tell, or as set by ``set_l2_bytes``)."""
    return fl_l2_bytes()


def cpu_isa():
    """The best instruction set of the fused kernels that this CPU and its OS support
    (CPUID and XGETBV: ``"avx512"`` needs AVX-512 F, DQ, BW and VL, ``"avx2"`` AVX2 and
    FMA), whatever the switches say; ``None`` also where the build has no fused kernels
    (a compiler other than GCC or clang, or not x86-64)."""
    return {FL_ISA_AVX512: "avx512", FL_ISA_AVX2: "avx2"}.get(fl_best_fused_isa())


#: The bfloat16 kernels (fused_tiles_bf16.h: vdpbf16ps) run here: the CPU has
#: AVX512-BF16 and the AVX-512 of the float32 kernels (FASTLSTM_NO_AVX512=1 or
#: FASTLSTM_NO_FUSED=1 at import switch them off too).
cdef bint _BF16_KERNELS = (_FUSED_ISA == FL_ISA_AVX512 and fl_cpu_has_avx512_bf16() != 0)


def have_bf16_kernels():
    """True when ``compute_dtype="bfloat16"`` runs on this CPU's own instructions (the
    bfloat16 kernels and GEMM tiles: AVX512-BF16); elsewhere it is emulated."""
    return bool(_BF16_KERNELS)


def cpu_has_bf16():
    """True when the CPU and its OS support AVX512-BF16 (with AVX-512 F, DQ, BW, VL),
    whatever the switches say."""
    return bool(fl_cpu_has_avx512_bf16())


#: The bfloat16 GEMMs run on AMX tiles (amx_tiles.h) where the bfloat16 kernels run, the
#: CPU has AMX-BF16 and Linux granted the tile state; FASTLSTM_NO_AMX=1 at import keeps
#: them on AVX512-BF16 (to compare the two on one machine).
cdef bint _AMX = (_BF16_KERNELS and os.environ.get("FASTLSTM_NO_AMX", "") != "1"
                  and fl_set_amx(1) != 0)


def have_amx_kernels():
    """True when the bfloat16 products' GEMMs (input projections, the per-step products
    of several rows, weight gradients) run on AMX tiles here."""
    return bool(_AMX)


def cpu_has_amx():
    """True when the CPU and its OS support AMX-TILE and AMX-BF16 (with AVX512-BF16),
    whatever the switches say (the process's request for the tile state aside)."""
    return bool(fl_cpu_has_amx())


def amx_call_count():
    """How many GEMMs ran on the AMX tiles in this process (the test that the AMX path
    ran where the CPU has it reads this)."""
    return int(fl_amx_call_count())
