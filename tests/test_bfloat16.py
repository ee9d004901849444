"""compute_dtype="bfloat16": the rounding, the kernels against the NumPy emulation of the
same arithmetic, the error against float32, and the estimators.

The kernels' tests skip, saying why, on CPUs without AVX512-BF16; where the CPU has it,
``test_the_bfloat16_kernels_run_where_the_cpu_has_them`` fails unless they ran, and where
it has AMX, ``test_the_amx_tiles_run_where_the_cpu_has_them`` fails unless the GEMMs ran
on the tiles. On an AMX CPU the GEMM tests above check the AMX tiles, and
``test_amx_and_avx512_bf16_tiles_agree`` checks the AVX512-BF16 ones (FASTLSTM_NO_AMX=1,
in a subprocess).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastlstm as fl
from fastlstm import _bfloat16
from fastlstm.backends import get_backend
from fastlstm.backends import _bf16_emulation
from fastlstm.backends._plans import BackwardPlan, ForwardPlan, LSTMCellArgs
from fastlstm._bfloat16 import bfloat16_bits, round_to_bfloat16

from _helpers import make_case, make_cell, step_kernel_arrays

_recurrent = pytest.importorskip("fastlstm._recurrent")
cython_backend = pytest.importorskip("fastlstm.backends.cython_backend")

HAVE_KERNELS = _recurrent.have_bf16_kernels()
needs_kernels = pytest.mark.skipif(
    not HAVE_KERNELS, reason="this CPU has no AVX512-BF16 (or FASTLSTM_NO_AVX512 / "
    "FASTLSTM_NO_FUSED switched the fused kernels off): compute_dtype='bfloat16' is "
    "emulated here")

#: float32 sums of the same exact products in another order: a few float32 ulps of the
#: values summed (|z| < ~30 here)
SUM_ORDER = dict(rtol=2e-5, atol=2e-6)


# ------------------------------------------------------------------------ rounding
def test_rounding_to_nearest_even_and_the_special_values():
    one_ulp = 2.0 ** -7                     # bfloat16's spacing at 1.0
    x = np.array([1.0, 1 + one_ulp / 2, 1 + 3 * one_ulp / 2, 1 + one_ulp / 2 + 2 ** -20,
                  -2.5, np.inf, -np.inf, 1e-40, -1e-40, 3.4e38, 0.0, -0.0], np.float32)
    want = np.array([1.0, 1.0, 1 + 2 * one_ulp, 1 + one_ulp, -2.5, np.inf, -np.inf, 0.0,
                     -0.0, np.inf, 0.0, -0.0], np.float32)
    got = round_to_bfloat16(x)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    assert np.isnan(round_to_bfloat16(np.array([np.nan], np.float32)))[0]
    assert bfloat16_bits(np.array([1.0], np.float32))[0] == 0x3F80
    assert round_to_bfloat16(np.ones((2, 3), np.float32)).shape == (2, 3)


@needs_kernels
def test_numpy_rounds_as_the_cpu_instruction():
    rng = np.random.default_rng(0)
    mant = rng.standard_normal(200_000).astype(np.float32)
    scale = np.float32(2.0) ** rng.integers(-140, 127, mant.size).astype(np.float32)
    with np.errstate(over="ignore", under="ignore"):
        x = np.concatenate([mant * scale, rng.integers(0, 2**32, 50_000, dtype=np.uint64)
                            .astype(np.uint32).view(np.float32)])
    x = x[~np.isnan(x)]
    want = round_to_bfloat16(x).view(np.uint32)
    # 1 MB: split over the threads at 16-value boundaries
    for n_threads in (1, 2, 3):
        got = _recurrent.round_bf16(x, n_threads)
        np.testing.assert_array_equal(got.view(np.uint32), want)
    strided = x[:x.size // 35 * 35].reshape(-1, 7, 5)[:, ::2]
    got = _recurrent.round_bf16(strided, 2)
    assert got.shape == strided.shape and got.flags.c_contiguous
    np.testing.assert_array_equal(got, round_to_bfloat16(strided))


@pytest.mark.parametrize("bad", ["float16", "bf16", 3, "float64"])
def test_compute_dtype_names_what_it_accepts(bad):
    with pytest.raises(ValueError, match="compute_dtype must be None, 'float32' or "
                                         "'bfloat16'"):
        _bfloat16.check_compute_dtype(bad)


def test_bfloat16_needs_float32_parameters():
    cell = make_cell("lstm", 8, 3, dtype=np.float64)
    x, lengths, _ = make_case(cell, 2, 4)
    with pytest.raises(ValueError, match="needs float32 parameters"):
        fl.dynamic_rnn(cell, x, lengths, compute_dtype="bfloat16")
    assert _bfloat16.check_compute_dtype("float32") is None
    assert _bfloat16.check_compute_dtype(None, np.float64) is None


# ---------------------------------------------------------------- packed layouts
def _unpack_pairs(words):
    """uint32 pairs -> (low, high) float32 values."""
    lo = (words.astype(np.uint32) << 16).view(np.float32)
    hi = (words.astype(np.uint32) & 0xFFFF0000).view(np.float32)
    return lo, hi


@needs_kernels
@pytest.mark.parametrize("I,H", [(0, 20), (3, 16), (7, 33), (28, 64)])
def test_pack_fused_bf16_layout(I, H):
    rng = np.random.default_rng(I + H)
    W_h = rng.standard_normal((H, 4 * H)).astype(np.float32)
    W_x = rng.standard_normal((I, 4 * H)).astype(np.float32) if I else None
    packed = _recurrent.pack_fused_bf16(W_h, W_x)
    KX, KH = -(-I // 2), -(-H // 2)
    assert packed.shape == (-(-H // 16), (KX + KH) * 64) and packed.dtype == np.uint32
    lo, hi = _unpack_pairs(packed.reshape(-1, KX + KH, 4, 16))
    for seg, W, K, off in ((0, W_x, I, 0), (1, W_h, H, KX)):
        if not K:
            continue
        padded = np.zeros((2 * -(-K // 2), 4, -(-H // 16) * 16), np.float32)
        padded[:K, :, :H] = round_to_bfloat16(W).reshape(K, 4, H)
        # group g, pair m, gate q, unit j  <->  W[2m (+1), q * H + 16 g + j]
        want = padded.reshape(-1, 2, 4, padded.shape[2] // 16, 16).transpose(3, 0, 2, 4, 1)
        np.testing.assert_array_equal(lo[:, off:off + -(-K // 2)], want[..., 0])
        np.testing.assert_array_equal(hi[:, off:off + -(-K // 2)], want[..., 1])


@needs_kernels
@pytest.mark.parametrize("n,K", [(20, 7), (64, 64), (70, 130)])
def test_pack_fused_t_bf16_layout(n, K):
    W = np.random.default_rng(n).standard_normal((n, K)).astype(np.float32)
    packed = _recurrent.pack_fused_t_bf16(W)
    assert packed.shape == (-(-n // 64), -(-K // 2), 64)
    lo, hi = _unpack_pairs(packed)
    padded = np.zeros((-(-n // 64) * 64, 2 * -(-K // 2)), np.float32)
    padded[:n, :K] = round_to_bfloat16(W)
    want = padded.reshape(-1, 64, packed.shape[1], 2).transpose(0, 2, 1, 3)
    np.testing.assert_array_equal(lo, want[..., 0])
    np.testing.assert_array_equal(hi, want[..., 1])


@needs_kernels
@pytest.mark.parametrize("K,n", [(7, 20), (64, 64), (130, 70), (1, 3)])
def test_pack_rows_bf16_packs_the_transpose_without_copying_it(K, n):
    B = np.random.default_rng(K).standard_normal((K, 2 * n)).astype(np.float32)[:, ::2]
    want = _recurrent.pack_fused_t_bf16(np.ascontiguousarray(B.T))
    with pytest.raises(ValueError, match="contiguous"):
        _recurrent.pack_rows_bf16(B)
    for n_threads in (1, 2):
        np.testing.assert_array_equal(
            _recurrent.pack_rows_bf16(np.ascontiguousarray(B), n_threads=n_threads), want)
    reused = np.full(want.shape, 0xFFFFFFFF, np.uint32)     # a scratch buffer's leftovers
    _recurrent.pack_rows_bf16(np.ascontiguousarray(B), reused, 2)
    np.testing.assert_array_equal(reused, want)
    with pytest.raises(ValueError, match="wrong shape"):
        _recurrent.pack_rows_bf16(np.ascontiguousarray(B), reused[:, :-1].copy())


def _same_bits_for_any_thread_count(product, shape):
    """``product(out, n_threads)`` into a NaN-filled ``out`` of ``shape`` for 1, 2 and 3
    threads: the three results, bit for bit equal; returns the first."""
    outs = []
    for n_threads in (1, 2, 3):
        out = np.full(shape, np.nan, np.float32)
        product(out, n_threads)
        outs.append(out)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])
    return outs[0]


def _rounded64(a):
    return round_to_bfloat16(a).astype(np.float64)


@needs_kernels
@pytest.mark.parametrize("K,widths,N,rows", [
    (37, [5, 1, 16], 128, None), (600, [28, 70], 192, None), (1, [3], 64, None),
    (50, [7, 9], 64, [0, 3, 4, 9, 10, 11, 40]), (8, [2], 64, [])])
def test_gemm_tn_bf16_against_the_rounded_products(K, widths, N, rows):
    """Weight gradients on the bfloat16 tiles: the exact products of the rounded operands
    summed in float32 (against float64 sums), the bias's broadcast column of ones among
    the segments, variable lengths as rows, the same bits for any thread count."""
    rng = np.random.default_rng(K)
    parts = [rng.standard_normal((K, m)).astype(np.float32) for m in widths]
    parts.append(np.broadcast_to(np.ones((1, 1), np.float32), (K, 1)))
    b = rng.standard_normal((K, N)).astype(np.float32)
    rows = None if rows is None else np.array(rows, np.int64)
    M = sum(widths) + 1
    got = _same_bits_for_any_thread_count(
        lambda out, n_threads: _recurrent.gemm_tn_bf16(parts, b, out, n_threads, rows), (M, N))
    A = np.concatenate(parts, axis=1)
    sel = slice(None) if rows is None else rows
    want = _rounded64(A[sel]).T @ _rounded64(b[sel])
    scale = np.abs(_rounded64(A[sel])).T @ np.abs(_rounded64(b[sel]))
    assert np.all(np.abs(got - want) <= 1e-6 * scale + 1e-30)
    with pytest.raises(ValueError, match="N % 64"):
        _recurrent.gemm_tn_bf16(parts, b[:, :N - 1], np.empty((M, N - 1), np.float32), 1)


@needs_kernels
@pytest.mark.parametrize("M,K,n", [(1, 5, 3), (9, 40, 70), (130, 129, 64)])
def test_gemm_rows_wt_bf16_against_the_rounded_products(M, K, n):
    rng = np.random.default_rng(M)
    a = rng.standard_normal((M, K)).astype(np.float32)
    W = rng.standard_normal((n, K)).astype(np.float32)
    packed = _recurrent.pack_fused_t_bf16(W).view(np.float32)
    out = np.empty(M * n, np.float32)
    _recurrent.gemm_rows_wt(a, packed, n, out, np.arange(M, dtype=np.int64) * n, None, 2,
                            True)
    want = _rounded64(a) @ _rounded64(W).T
    scale = np.abs(_rounded64(a)) @ np.abs(_rounded64(W)).T
    assert np.all(np.abs(out.reshape(M, n) - want) <= 1e-6 * scale)
    with pytest.raises(ValueError, match="pack_fused_t_bf16"):
        _recurrent.gemm_rows_wt(a, _recurrent.pack_fused_t(W), n, out,
                                np.arange(M, dtype=np.int64) * n, None, 1, True)


@needs_kernels
@pytest.mark.parametrize("M,K,N", [(1, 5, 64), (9, 300, 128), (130, 129, 192), (37, 1, 64)])
def test_gemm_rows_bf16_against_the_rounded_products(M, K, N):
    """The input projection's GEMM: rows rounded into pairs once, passes of 128 pair rows
    (K = 300: three) continuing one in-order sum, the same bits for any split."""
    rng = np.random.default_rng(K)
    a = rng.standard_normal((M, 2 * K)).astype(np.float32)[:, :K]      # rows lda apart
    Bm = rng.standard_normal((K, N)).astype(np.float32)
    packed = _recurrent.pack_rows_bf16(Bm)
    got = _same_bits_for_any_thread_count(
        lambda out, n_threads: _recurrent.gemm_rows_bf16(a, packed, out, n_threads), (M, N))
    # the same sums as the per-row tiles (gemm_rows_wt), which run them in one pass
    one_pass = np.empty(M * N, np.float32)
    _recurrent.gemm_rows_wt(a, packed.view(np.float32), N, one_pass,
                            np.arange(M, dtype=np.int64) * N, None, 1, True)
    np.testing.assert_array_equal(got, one_pass.reshape(M, N))
    want = _rounded64(a) @ _rounded64(Bm)
    assert np.all(np.abs(got - want) <= 1e-6 * (np.abs(_rounded64(a))
                                                @ np.abs(_rounded64(Bm))))
    with pytest.raises(ValueError, match="N % 64"):
        _recurrent.gemm_rows_bf16(a, packed, np.empty((M, N + 1), np.float32), 1)
    # a bias added by the tiles: the bits of adding it to the finished products
    bias = rng.standard_normal(N).astype(np.float32)
    with_bias = _same_bits_for_any_thread_count(
        lambda out, n_threads: _recurrent.gemm_rows_bf16(a, packed, out, n_threads, bias),
        (M, N))
    np.testing.assert_array_equal(with_bias, got + bias)
    with pytest.raises(ValueError, match="bias must have"):
        _recurrent.gemm_rows_bf16(a, packed, np.empty((M, N), np.float32), 1, bias[1:])


@needs_kernels
def test_the_bfloat16_gemms_tiles_give_the_rounding_paths_values():
    """Backend.gemm with bfloat16 products: the compiled tiles (kernels) against both
    operands rounded then multiplied by BLAS (no kernels), every product the layers use."""
    from fastlstm._gemm import BFloat16Gemm
    tiles, blas = BFloat16Gemm("compiled"), BFloat16Gemm(None)
    rng = np.random.default_rng(5)
    T, B, I, H = 6, 5, 20, 16
    x2 = rng.standard_normal((T * B, I)).astype(np.float32)
    h2 = rng.standard_normal((T * B, H)).astype(np.float32)
    dz2 = rng.standard_normal((T * B, 4 * H)).astype(np.float32)
    W_x = rng.standard_normal((I, 4 * H)).astype(np.float32)
    ones = np.broadcast_to(np.ones((1, 1), np.float32), (T * B, 1))
    rows = np.sort(rng.choice(T * B, 17, replace=False))
    cases = [
        ("matmul", lambda g: g.matmul(x2, W_x, 2)),
        ("matmul strided rows", lambda g: g.matmul(x2[::2], W_x, 2)),
        ("matmul_nt", lambda g: g.matmul_nt(dz2, W_x, 2)),
        ("matmul_tn", lambda g: g.matmul_tn(x2, dz2, 2)),
        ("stacked", lambda g: g.matmul_tn_stacked([x2, h2, ones], dz2, 2, True)),
        ("stacked rows", lambda g: g.matmul_tn_stacked([x2, h2, ones], dz2, 2, False, rows)),
        ("input_gradient", lambda g: g.input_gradient(dz2, W_x, None, T, B, False, 2)),
        ("input_gradient rows", lambda g: g.input_gradient(dz2, W_x, rows, T, B, True, 2)),
    ]
    for name, product in cases:
        np.testing.assert_allclose(product(tiles), product(blas), rtol=1e-5, atol=1e-5,
                                   err_msg=name)
    # matmul's bias: the bits of adding it afterwards, on 64-column blocks (added by the
    # tiles) and off them
    for n in (4 * H, 4 * H + 3):
        W = rng.standard_normal((I, n)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        for g in (tiles, blas):
            np.testing.assert_array_equal(g.matmul(x2, W, 2, bias=bias),
                                          g.matmul(x2, W, 2) + bias)


# ------------------------------------------------- the kernels against the emulation
def _lstm_problem(B, T, I, H, peep, clip, seed):
    rng = np.random.default_rng(seed)
    W = (rng.standard_normal((H, 4 * H)) / np.sqrt(H)).astype(np.float32)
    W_x = (rng.standard_normal((I, 4 * H)) / np.sqrt(max(I, 1))).astype(np.float32)
    bias = rng.uniform(-0.5, 0.5, 4 * H).astype(np.float32)
    peepholes = (rng.uniform(-1, 1, (3, H)) if peep else np.zeros((3, H))).astype(np.float32)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    seq_len = rng.integers(0, T + 1, B).astype(np.int64)
    seq_len[0] = T
    hs = np.zeros((T + 1, B, H), np.float32)
    cs = np.zeros_like(hs)
    hs[0], cs[0] = rng.uniform(-1, 1, (2, B, H))
    cell = LSTMCellArgs(W, peepholes, peep, 0.5, clip)
    return cell, W_x, bias, x, seq_len, hs, cs


def _history(T, B, H, clip):
    acts = np.zeros((T, B, 4 * H), np.float32)
    cun = np.zeros((T, B, H) if clip else (0, 0, 0), np.float32)
    return acts, cun


# (B, T, I, H): one row (row blocks), tiles with short last tiles, H off the 16 / 64 grid
SHAPES = [(1, 7, 5, 40), (6, 5, 3, 20), (9, 4, 30, 70), (3, 6, 0, 130)]


@needs_kernels
@pytest.mark.parametrize("B,T,I,H", SHAPES)
@pytest.mark.parametrize("peep,clip", [(False, 0.0), (True, 0.6)])
@pytest.mark.parametrize("schedule", ["chunks", "units"])
def test_lstm_kernels_match_the_emulation(B, T, I, H, peep, clip, schedule):
    """Forward (input projection in the step, or xproj from outside) and backward, in
    batch chunks or with the hidden units split, against the reference with the same
    roundings: the same exact products, summed in another order."""
    cell, W_x, bias, x, seq_len, hs, cs = _lstm_problem(B, T, I, H, peep, clip, B + H)
    acts, cun = _history(T, B, H, clip)
    slices = 2 if schedule == "units" else 0
    xproj = (round_to_bfloat16(x.reshape(T * B, I)) @ round_to_bfloat16(W_x)
             + bias).reshape(T, B, 4 * H)
    hs_e, cs_e, (acts_e, cun_e) = hs.copy(), cs.copy(), _history(T, B, H, clip)
    _bf16_emulation.lstm_forward(xproj, cell.W, cell.peepholes, peep, 0.5, clip, seq_len,
                                 hs_e, cs_e, acts_e, cun_e)
    if I:       # x W_x inside the step
        plan = ForwardPlan(2, unit_slices=slices, x=x, bias=bias, bf16=True,
                           W_fused=_recurrent.pack_fused_bf16(cell.W, W_x).view(np.float32))
        _recurrent.lstm_forward(cell, np.empty((0, 0, 0), np.float32), seq_len, hs, cs,
                                acts, cun, 2, plan)
    else:
        plan = ForwardPlan(2, unit_slices=slices, bf16=True,
                           W_fused=_recurrent.pack_fused_bf16(cell.W).view(np.float32))
        _recurrent.lstm_forward(cell, xproj, seq_len, hs, cs, acts, cun, 2, plan)
    np.testing.assert_allclose(hs, hs_e, **SUM_ORDER)
    np.testing.assert_allclose(cs, cs_e, **SUM_ORDER)
    np.testing.assert_allclose(acts, acts_e, **SUM_ORDER)

    rng = np.random.default_rng(T)
    d_out = rng.standard_normal((T, B, H)).astype(np.float32)
    grads = [rng.standard_normal((B, H)).astype(np.float32) for _ in range(2)]
    dh, dc = (g.copy() for g in grads)
    dz = np.zeros((T, B, 4 * H), np.float32)
    dh_e, dc_e, dz_e = grads[0].copy(), grads[1].copy(), dz.copy()
    _bf16_emulation.lstm_backward(cell.W, cell.peepholes, peep, clip, seq_len, cs, acts, cun,
                                  d_out, dh_e, dc_e, dz_e)
    WT = _recurrent.pack_fused_t_bf16(cell.W).view(np.float32)
    if schedule == "units":
        width = 64
        _recurrent.lstm_backward_units(cell, seq_len, cs, acts, cun, d_out, dh, dc, dz, 2,
                                       BackwardPlan(n_slices=-(-H // width), width=width,
                                                    WT_fused=WT, bf16=True))
    else:
        _recurrent.lstm_backward(cell, seq_len, cs, acts, cun, d_out, dh, dc, dz, 2,
                                 BackwardPlan(2, WT_fused=WT, bf16=True))
    # dz is elementwise from the same values: the difference is the forward's (above)
    # carried through; dh sums 4H products of dz rounded to bfloat16, where a last-bit
    # difference in dz may move a rounding by a bfloat16 ulp (2^-8 relative)
    np.testing.assert_allclose(dz, dz_e, rtol=1e-4, atol=1e-5)
    scale = np.abs(dz_e).max() * np.abs(cell.W).max()
    np.testing.assert_allclose(dh, dh_e, rtol=1e-3, atol=2 ** -8 * scale)
    np.testing.assert_allclose(dc, dc_e, rtol=1e-4, atol=1e-5)


@needs_kernels
def test_bf16_plans_need_their_packed_weights():
    cell, W_x, bias, x, seq_len, hs, cs = _lstm_problem(2, 3, 0, 16, False, 0.0, 0)
    acts, cun = _history(3, 2, 16, 0.0)
    xproj = np.zeros((3, 2, 64), np.float32)
    f32_packed = _recurrent.pack_fused(cell.W)
    with pytest.raises(ValueError, match="pack_fused_bf16"):
        _recurrent.lstm_forward(cell, xproj, seq_len, hs, cs, acts, cun, 1,
                                ForwardPlan(1, W_fused=f32_packed, bf16=True))
    with pytest.raises(ValueError, match="pack_fused_t_bf16"):
        _recurrent.lstm_backward(cell, seq_len, cs, acts, cun, hs[1:], hs[0].copy(),
                                 cs[0].copy(), np.zeros_like(xproj), 1,
                                 BackwardPlan(1, WT_fused=_recurrent.pack_fused_t(cell.W),
                                              bf16=True))
    with pytest.raises(ValueError, match="bf16 needs"):
        _recurrent.lstm_forward(cell, xproj, seq_len, hs, cs, acts, cun, 1,
                                ForwardPlan(1, bf16=True))


CELL_NAMES = ["lstm", "peephole_clip", "gru", "gru_reset_after", "rnn"]


@needs_kernels
def test_gru_and_rnn_kernels_check_their_packed_operands():
    H, B = 16, 3
    W, seq_len, hs, xproj, empty = step_kernel_arrays(H, B)
    W_ru = _recurrent.pack_rows_bf16(W[:, :2 * H])
    with pytest.raises(ValueError, match="w_bf16 and w_c_bf16"):
        _recurrent.gru_forward(xproj, W, np.zeros(3 * H, np.float32), False, seq_len, hs,
                               empty, empty, 1, B, w_bf16=W_ru)
    x_rnn, W_rnn = xproj[..., :H].copy(), W[:, :H].copy()
    with pytest.raises(ValueError, match="packed operand must be"):
        _recurrent.rnn_forward(x_rnn, W_rnn, seq_len, hs, 1, B,
                               w_bf16=_recurrent.pack_rows_bf16(W.T.copy()))   # K = 3H
    with pytest.raises(ValueError, match="float32"):
        _recurrent.rnn_forward(x_rnn.astype(np.float64), W_rnn.astype(np.float64), seq_len,
                               hs.astype(np.float64), 1, B,
                               w_bf16=_recurrent.pack_rows_bf16(W_rnn))


@pytest.mark.parametrize("name", CELL_NAMES)
def test_the_bfloat16_kernels_run_where_the_cpu_has_them(monkeypatch, name):
    """Fails on a CPU with AVX512-BF16 unless every cell's bfloat16 path is its kernels
    (not the emulation); on others, the emulation runs and says so."""
    switched_off = any(os.environ.get(k) == "1"
                       for k in ("FASTLSTM_NO_AVX512", "FASTLSTM_NO_FUSED"))
    be = get_backend("cython").computing("bfloat16")
    kind = name.split("_")[0].replace("peephole", "lstm")
    if not _recurrent.cpu_has_bf16() or switched_off:
        assert be.emulates(kind)
        pytest.skip("no AVX512-BF16 here (or switched off): the emulation runs")
    assert HAVE_KERNELS and not be.emulates(kind)

    def refuse(*args, **kwargs):
        raise AssertionError(f"the {kind}'s bfloat16 products ran the emulation")
    for direction in ("forward", "backward"):
        monkeypatch.setattr(_bf16_emulation, f"{kind}_{direction}", refuse)
    cell = make_cell(name, 24, 5, dtype=np.float32)
    x, lengths, state = make_case(cell, 4, 6)
    out, _, cache = fl.dynamic_rnn(cell, x, lengths, state, backend="cython",
                                   return_cache=True, compute_dtype="bfloat16")
    fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
    fl.dynamic_rnn(cell, x, lengths, state, backend="auto", compute_dtype="bfloat16")


_SWITCHES_OFF = ("FASTLSTM_NO_AVX512", "FASTLSTM_NO_FUSED", "FASTLSTM_NO_AMX")


def test_the_amx_tiles_run_where_the_cpu_has_them():
    """Fails on a CPU with AMX-BF16 (and Linux's grant of the tile state) unless the
    bfloat16 GEMMs of a forward and backward ran on the AMX tiles; elsewhere, they are
    off and the test says why it skips."""
    if not _recurrent.cpu_has_amx() or any(os.environ.get(k) == "1" for k in _SWITCHES_OFF):
        assert not _recurrent.have_amx_kernels() or _recurrent.cpu_has_amx()
        pytest.skip("no AMX-BF16 here (or switched off): the bfloat16 GEMMs run on "
                    "AVX512-BF16 or the emulation")
    assert _recurrent.have_amx_kernels(), "the CPU has AMX but the tiles are off"
    before = _recurrent.amx_call_count()
    cell = make_cell("lstm", 48, 20, dtype=np.float32)
    x, lengths, state = make_case(cell, 24, 7)
    out, _, cache = fl.dynamic_rnn(cell, x, lengths, state, backend="cython",
                                   return_cache=True, compute_dtype="bfloat16")
    fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
    assert _recurrent.amx_call_count() > before


AGREEMENT = r"""
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import fastlstm as fl
from fastlstm import _recurrent
from _helpers import make_case, make_cell
rng = np.random.default_rng(0)
a = rng.standard_normal((37, 301)).astype(np.float32)
b = rng.standard_normal((301, 128)).astype(np.float32)
out = np.empty((37, 128), np.float32)
_recurrent.gemm_rows_bf16(a, _recurrent.pack_rows_bf16(b), out, 2,
                          rng.standard_normal(128).astype(np.float32))
tn = np.empty((301, 128), np.float32)
_recurrent.gemm_tn_bf16([a], rng.standard_normal((37, 128)).astype(np.float32),
                        tn, 2)
cell = make_cell("peephole", 40, 24, dtype=np.float32)
x, lengths, state = make_case(cell, 33, 9)
y, _, cache = fl.dynamic_rnn(cell, x, lengths, state, backend="cython", return_cache=True,
                             compute_dtype="bfloat16")
g = fl.dynamic_rnn_backward(cell, cache, np.ones_like(y))
np.savez(sys.argv[2], amx=_recurrent.have_amx_kernels(), gemm=out, tn=tn, y=y,
         **{"g_" + k: v for k, v in g.items() if k != "initial_state"})
"""


@needs_kernels
def test_amx_and_avx512_bf16_tiles_agree(tmp_path):
    """The same exact products summed in float32 in two orders (the AMX tiles' and the
    AVX512-BF16 tiles'): the GEMMs, a forward and its gradients agree to float32 sums'
    rounding. On a CPU without AMX both runs take the AVX512-BF16 tiles (and agree bit
    for bit)."""
    tests = os.path.dirname(os.path.abspath(__file__))
    res = []
    for no_amx in ("0", "1"):
        path = tmp_path / f"no_amx_{no_amx}.npz"
        subprocess.run([sys.executable, "-c", AGREEMENT, tests, str(path)], check=True,
                       env={**os.environ, "FASTLSTM_NO_AMX": no_amx}, timeout=300)
        res.append(dict(np.load(path)))
    on, off = res
    assert not off["amx"] and bool(on["amx"]) == _recurrent.have_amx_kernels()
    for key in on:
        if key != "amx":
            np.testing.assert_allclose(on[key], off[key], rtol=1e-4, atol=1e-4, err_msg=key)
            if not on["amx"]:
                np.testing.assert_array_equal(on[key], off[key], err_msg=key)


# ------------------------------------------------------------ through dynamic_rnn


@pytest.mark.parametrize("name", CELL_NAMES)
@pytest.mark.parametrize("B,T,I,H", [(5, 8, 7, 24), (1, 6, 40, 70)])
def test_dynamic_rnn_bf16_matches_the_emulation(name, B, T, I, H):
    """The default backend (its kernels where it has them) against the numpy backend's
    emulation, forward, inference and gradients."""
    cell = make_cell(name, H, I, dtype=np.float32, seed=B + H)
    x, lengths, state = make_case(cell, B, T, seed=T)
    got, want = {}, {}
    for backend, res in (("auto", got), ("numpy", want)):
        out, st, cache = fl.dynamic_rnn(cell, x, lengths, state, backend=backend,
                                        return_cache=True, compute_dtype="bfloat16")
        res["infer"] = fl.dynamic_rnn(cell, x, lengths, state, backend=backend,
                                      compute_dtype="bfloat16")[0]
        d_out = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
        res["out"], res["grads"] = out, fl.dynamic_rnn_backward(cell, cache, d_out)
    np.testing.assert_allclose(got["out"], want["out"], **SUM_ORDER)
    np.testing.assert_allclose(got["infer"], want["out"], **SUM_ORDER)
    for key, g in want["grads"].items():
        if key == "initial_state":
            continue
        # gradient products round dz to bfloat16: a last-bit difference in dz may move
        # an operand by one bfloat16 ulp, 2^-8 of it
        err = np.linalg.norm(got["grads"][key] - g) / max(np.linalg.norm(g), 1e-30)
        assert err < 2e-3, (key, err)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bf16_products_differ_from_float32_by_bfloat16_rounding(name):
    """The documented error: over T = 200 steps, outputs within 2e-2 of float32's (both
    bounded in [-1, 1]); measured at most 2.1e-3 (LSTM) and 2.9e-3 (GRU)."""
    cell = make_cell(name, 64, 16, dtype=np.float32, seed=3, bias_scale=0.2)
    x, lengths, state = make_case(cell, 8, 200, seed=4, scale=1.0)
    lengths[:] = 200
    f32 = fl.dynamic_rnn(cell, x, lengths, state)[0]
    b16 = fl.dynamic_rnn(cell, x, lengths, state, compute_dtype="bfloat16")[0]
    err = np.abs(f32 - b16).max()
    assert 1e-5 < err < 2e-2, err


@pytest.mark.parametrize("name", ["lstm", "peephole", "gru", "rnn"])
def test_bf16_gradients_against_the_float64_gradients(name):
    """Gradient check with bfloat16 products: the loss is a step function of the weights
    at bfloat16's resolution, so finite differences cannot check it; the analytic
    gradients are checked against the exact (float64, finite-difference-checked in
    test_reference_gradcheck.py) gradients of the same model instead. Each product's
    operands carry a relative rounding error of at most 2^-9; over 12 steps the
    gradients' relative error measured 0.2-0.9%: bound 3%. Not with a cell clip: where a
    rounding moves a cell state across the clip, that unit's gradient jumps to or from zero
    (one such case measured 6%), as float32 rounding can, only more often."""
    cell64 = make_cell(name, 16, 5, dtype=np.float64, seed=7)
    cell32 = make_cell(name, 16, 5, dtype=np.float32, seed=7)
    x, lengths, state = make_case(cell64, 4, 12, seed=8)
    d_out = np.random.default_rng(9).standard_normal((4, 12, 16))
    out, _, cache = fl.dynamic_rnn(cell64, x, lengths, state, backend="numpy",
                                   return_cache=True)
    exact = fl.dynamic_rnn_backward(cell64, cache, d_out)
    x32 = x.astype(np.float32)
    state32 = (fl.LSTMStateTuple(*(s.astype(np.float32) for s in state))
               if isinstance(state, tuple) else state.astype(np.float32))
    out, _, cache = fl.dynamic_rnn(cell32, x32, lengths, state32, return_cache=True,
                                   compute_dtype="bfloat16")
    got = fl.dynamic_rnn_backward(cell32, cache, d_out.astype(np.float32))
    for key in cell64.params:
        err = np.linalg.norm(got[key] - exact[key]) / np.linalg.norm(exact[key])
        assert err < 3e-2, (key, err)


def test_the_backward_keeps_the_forwards_compute_dtype():
    cell = make_cell("lstm", 12, 3, dtype=np.float32)
    x, lengths, state = make_case(cell, 3, 5)
    out, _, cache = fl.dynamic_rnn(cell, x, lengths, state, return_cache=True,
                                   compute_dtype="bfloat16")
    assert cache.backend.compute_dtype == "bfloat16"
    g = fl.dynamic_rnn_backward(cell, cache, np.ones_like(out))
    out32, _, cache32 = fl.dynamic_rnn(cell, x, lengths, state, return_cache=True)
    g32 = fl.dynamic_rnn_backward(cell, cache32, np.ones_like(out))
    assert cache32.backend.compute_dtype is None
    assert not np.array_equal(g["recurrent_kernel"], g32["recurrent_kernel"])
    be = get_backend("numpy").computing("bfloat16")
    assert be.computing("bfloat16") is be and be.computing(None) is get_backend("numpy")
    assert "bfloat16" in repr(be)


# ---------------------------------------------------------------------- estimators
def _digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return (X / 16).reshape(-1, 8, 8).astype(np.float32), y


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_classifier_with_bfloat16_products():
    X, y = _digits()
    kw = dict(hidden_size=32, max_iter=3, random_state=0)
    b16 = fl.LSTMClassifier(compute_dtype="bfloat16", **kw).fit(X[:600], y[:600])
    f32 = fl.LSTMClassifier(**kw).fit(X[:600], y[:600])
    assert b16.get_params()["compute_dtype"] == "bfloat16"
    # the same training up to rounding: losses within 1%, different bits
    np.testing.assert_allclose(b16.loss_curve_, f32.loss_curve_, rtol=1e-2)
    assert b16.loss_curve_ != f32.loss_curve_
    proba = b16.predict_proba(X[600:700])
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
    emulated = fl.LSTMClassifier(compute_dtype="bfloat16", backend="numpy", **kw)
    emulated.fit(X[:600], y[:600])
    np.testing.assert_allclose(emulated.loss_curve_, b16.loss_curve_, rtol=1e-4)


def test_classifier_refuses_bfloat16_with_float64():
    X, y = _digits()
    clf = fl.LSTMClassifier(hidden_size=8, max_iter=1, dtype="float64",
                            compute_dtype="bfloat16")
    with pytest.raises(ValueError, match="needs float32 parameters"):
        clf.fit(X[:50], y[:50])
    with pytest.raises(ValueError, match="compute_dtype"):
        fl.LSTMClassifier(compute_dtype="float16").fit(X[:50], y[:50])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_model_files_keep_compute_dtype_and_older_files_load(tmp_path):
    import json
    X, y = _digits()
    clf = fl.LSTMClassifier(hidden_size=8, max_iter=1, random_state=0,
                            compute_dtype="bfloat16").fit(X[:80], y[:80])
    path = tmp_path / "m.npz"
    clf.save(path)
    loaded = fl.LSTMClassifier.load(path)
    assert loaded.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(loaded.predict_proba(X[:20]), clf.predict_proba(X[:20]))
    # a file written before compute_dtype existed: the same file without that parameter
    with np.load(path) as archive:
        arrays = dict(archive)
    meta = json.loads(arrays["meta"].item())
    del meta["params"]["compute_dtype"]
    arrays["meta"] = np.array(json.dumps(meta))
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    older = fl.LSTMClassifier.load(old)
    assert older.compute_dtype is None
    np.testing.assert_allclose(older.predict_proba(X[:20]), clf.predict_proba(X[:20]),
                               rtol=1e-2)
