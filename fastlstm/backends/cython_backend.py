"""The ``"cython"`` backend: OpenMP kernels compiled from ``src_cy/_recurrent.pyx``.

Two paths. On CPUs with AVX-512 or AVX2 + FMA, float32 LSTMs run the fused step of
``src_cy/fused_step.h`` (packed weights, register tiles, gate math in L1; no BLAS), which
can also compute the input projection itself (``fuses_input``, ``lstm_forward_input``)
and write inference outputs straight into the caller's layout (``lstm_infer_input``); the
float32 GRU and basic RNN run their per-step products on the same tiles. Everything else
(float64, a single GRU / RNN sequence, CPUs without AVX2, FASTLSTM_NO_FUSED=1) calls
SciPy's BLAS for the per-step product from inside the kernels' parallel region, so those
calls limit BLAS to one thread for their duration.
"""

import time

import numpy as np

from .. import _thresholds
from .. import _recurrent
from .. import _governor
from .._threads import blas_threads, default_num_threads
from .._workspace import scratch
from ._chunking import chunk_rows, n_chunks, pack_unit_slices, unit_slices
from ._plans import BackwardPlan, ForwardPlan, LSTMCellArgs
from ._split_tuner import SplitTuner

NAME = "cython"
#: Cell kinds with kernels here.
CELLS = ("rnn", "lstm", "gru")
#: Its layer GEMMs: the extension's blocks and AVX-512 tiles (fastlstm._gemm).
GEMM_KERNELS = "compiled"
openmp_enabled = _recurrent.openmp_enabled
swap_leading_axes = _recurrent.swap_leading_axes
#: The fused float32 LSTM step runs on this CPU (src_cy/fused_step.h; AVX-512 or AVX2).
FUSED_STEP = _recurrent.have_fused_step()
#: Kinds with bfloat16 kernels on this CPU (AVX512-BF16: the fused LSTM step, the GRU's
#: and the RNN's per-step products on the tiles of src_cy/fused_tiles_bf16.h): their
#: kernels take ``bf16=True``.
BF16_CELLS = ("lstm", "gru", "rnn") if _recurrent.have_bf16_kernels() else ()
_AMX = _recurrent.have_amx_kernels()


def kernel_path():
    """What runs a float32 LSTM step on this machine, in words (``python -m fastlstm
    kernels``, ``benchmarks/bench_kernels.py``)."""
    isa = _recurrent.fused_isa()
    if isa:
        name = {"avx512": "AVX-512", "avx2": "AVX2"}[isa]
        tiles = "6-row" if isa == "avx512" else "4-row"
        return (f"fused {name} step (packed [W_x; W_h], {tiles} register tiles in passes "
                "over k, gate math in L1; src_cy/fused_step.h)")
    small = (", 2-16 rows on the AVX2 kernel of src_cy/small_gemm_avx2.h"
             if _recurrent.small_gemm_enabled() else "")
    return (f"per-step products in SciPy's BLAS{small} (single-threaded inside the "
            "kernels' parallel region), gate math compiled for AVX-512 / AVX2 / x86-64")


#: lstm_backward reads d_outputs through their strides: no transposing copy of batch-major
#: gradients (1.8 MB read and written per backward at the seed's size).
LSTM_BACKWARD_STRIDED_D_OUTPUTS = True


def _single_threaded_blas(kernel, batch_axis, bf16_operands=None, f32_operands=None):
    """Wrap a kernel: BLAS at one thread, and the chunk size of this batch appended.
    ``bf16=True``: bfloat16 products, the per-step operands that
    ``bf16_operands(*args)`` returns (a dict of keyword arguments) packed once per call.
    Otherwise, where the fused kernels run and the batch has ``MIN_BATCH_FOR_STEP_TILES``
    rows or more, ``f32_operands(*args)``: the float32 operands packed once per call for
    their tiles (an empty dict for float64: BLAS per step)."""
    def run(*args, bf16=False):
        if bf16 and bf16_operands is None:
            raise ValueError(f"{kernel.__name__} has no bfloat16 products")
        batch = args[batch_axis].shape[-2]
        if bf16:
            packed = bf16_operands(*args)
        elif (FUSED_STEP and f32_operands is not None
              and batch >= _thresholds.MIN_BATCH_FOR_STEP_TILES):
            packed = f32_operands(*args)
        else:
            packed = {}
        with blas_threads(1):
            kernel(*args, chunk_rows(batch), **packed)
    run.__name__ = kernel.__name__
    run.__doc__ = kernel.__doc__
    return run


def _rnn_forward_bf16(xproj, W, *args):
    return {"w_bf16": _recurrent.pack_rows_bf16(W)}                    # h W


def _rnn_backward_bf16(W, *args):
    return {"w_bf16": _recurrent.pack_fused_t_bf16(W)}                 # dz W^T


def _gru_forward_bf16(xproj, W, b_h, reset_after, *args):
    if reset_after:                                                     # h W
        return {"w_bf16": _recurrent.pack_rows_bf16(W)}
    H = W.shape[0]                                                      # h W_ru, (r h) W_c
    return {"w_bf16": _recurrent.pack_rows_bf16(W[:, :2 * H]),
            "w_c_bf16": _recurrent.pack_rows_bf16(W[:, 2 * H:])}


def _gru_backward_bf16(W, reset_after, *args):
    if reset_after:
        return {"w_bf16": _recurrent.pack_fused_t_bf16(W)}
    H = W.shape[0]
    return {"w_bf16": _recurrent.pack_fused_t_bf16(np.ascontiguousarray(W[:, :2 * H])),
            "w_c_bf16": _recurrent.pack_fused_t_bf16(np.ascontiguousarray(W[:, 2 * H:]))}


# float32 on the fused kernels' tiles, the operand packed once per call (OpenBLAS
# repacked all of it at every step and chunk: GRU (64, 25, 512, 512) inference, Zen 4,
# 33-36 ms on OpenBLAS, 31 on the tiles), in pack_fused_t's layout.
def _packed_rows_f32(B):
    """``B`` (K, N) of a step's ``a @ B`` as ``pack_fused_t(B.T)`` lays it out, (ceil(N/64),
    K, 64), by copying its 64-column blocks (0.2 ms at (512, 1536) against 2.1 for the
    transposing copy that pack_fused_t would need first)."""
    K, N = B.shape
    full = N // 64
    out = np.zeros((-(-N // 64), K, 64), np.float32)
    out[:full] = B[:, :64 * full].reshape(K, full, 64).transpose(1, 0, 2)
    if N % 64:
        out[full, :, :N % 64] = B[:, 64 * full:]
    return out


def _packed_t_f32(W):
    """``W.T`` of a step's ``a @ W.T`` (the backward's), packed by ``pack_fused_t``."""
    return _recurrent.pack_fused_t(np.ascontiguousarray(W))


def _rnn_forward_f32(xproj, W, *args):
    return {"w_f32": _packed_rows_f32(W)} if W.dtype == np.float32 else {}   # h W


def _rnn_backward_f32(W, *args):
    return {"w_f32": _packed_t_f32(W)} if W.dtype == np.float32 else {}      # dz W^T


def _gru_forward_f32(xproj, W, b_h, reset_after, *args):
    if W.dtype != np.float32:
        return {}
    if reset_after:
        return {"w_f32": _packed_rows_f32(W)}
    H = W.shape[0]
    return {"w_f32": _packed_rows_f32(W[:, :2 * H]), "w_c_f32": _packed_rows_f32(W[:, 2 * H:])}


def _gru_backward_f32(W, reset_after, *args):
    if W.dtype != np.float32:
        return {}
    if reset_after:
        return {"w_f32": _packed_t_f32(W)}
    H = W.shape[0]
    return {"w_f32": _packed_t_f32(W[:, :2 * H]), "w_c_f32": _packed_t_f32(W[:, 2 * H:])}


# The argument whose second-to-last axis is the batch: hs / dh in the contract.
rnn_forward = _single_threaded_blas(_recurrent.rnn_forward, 3, _rnn_forward_bf16,
                                    _rnn_forward_f32)
rnn_backward = _single_threaded_blas(_recurrent.rnn_backward, 4, _rnn_backward_bf16,
                                     _rnn_backward_f32)
gru_forward = _single_threaded_blas(_recurrent.gru_forward, 5, _gru_forward_bf16,
                                    _gru_forward_f32)
gru_backward = _single_threaded_blas(_recurrent.gru_backward, 7, _gru_backward_bf16,
                                     _gru_backward_f32)


def fused_unit_slices(batch_size, num_units, weight_rows=0):
    """Slices for the fused step's hidden-unit split (one per core), or 0: batch chunks,
    by the fixed rule (small batches may take the split tuner's choice instead:
    :func:`_run_fused`). ``weight_rows``: rows of the packed weights (``I + H`` with the
    input projection in the step, ``H`` without)."""
    cores = default_num_threads()
    return _unit_slices_for(batch_size, num_units, weight_rows, cores,
                            chunk_rows(batch_size, True, cores))


def _unit_slices_for(batch_size, num_units, weight_rows, cores, rows):
    groups = -(-num_units // 16)
    if cores < 2:
        return 0
    if rows >= batch_size:                           # one chunk
        per_core = _thresholds.MIN_GROUPS_PER_SLICE_ONE_ROW if batch_size == 1 else 1
        return cores if groups >= cores * per_core else 0
    if groups < cores * _thresholds.MIN_GROUPS_PER_SLICE:
        return 0
    if rows < _thresholds.MAX_CHUNK_ROWS_FOR_UNIT_SPLIT or (
            rows == _thresholds.MAX_CHUNK_ROWS_FOR_UNIT_SPLIT
            and groups >= _thresholds.UNIT_SPLIT_GROUPS_AT_FULL_TILES):
        return cores
    if weight_rows * groups * 64 * 4 >= _thresholds.UNIT_SPLIT_MIN_WEIGHT_BYTES:
        return cores
    return 0


_split_tuner = SplitTuner()


def _run_tuned(run, fixed, split, key, steps, n_threads, cores):
    """``run(fixed)``, or, where the split tuner may choose (tuning on, two or more
    threads, ``split`` not None), ``run`` of its choice between ``split`` and 0 (one core
    or the batch chunks); a probing call is timed, per step of its ``steps``, for the
    tuner. ``key``: the shape and the kernel (whose cost per step differs); the steps
    enter it by powers of two (a call of few steps is mostly fixed cost, whose balance
    differs: T = 1 inference at (1, T, 32, 64) took 18 us on one core, 20 split).
    While ``_governor.late_threads`` backs off, 0 runs (a count given explicitly keeps
    its threads, but small batches leave the split)."""
    if not _thresholds.TUNE_UNIT_SPLIT or split is None or min(n_threads, cores) < 2 or steps < 1:
        run(fixed)
        return
    if _governor.late_threads.active():
        run(0)
        return
    key = (key, cores, n_threads, steps.bit_length())
    # the rules' pick last: from the third call on it runs, where it wins decisively
    choice, probing = _split_tuner.choose(key, (0, split) if fixed == split else (split, 0))
    if not probing:
        run(choice)
        return
    t0 = time.perf_counter()
    run(choice)
    _split_tuner.record(key, choice, (time.perf_counter() - t0) / steps)


def _run_fused(run, kind, batch_size, num_units, weight_rows, steps, n_threads):
    """``run(chunk_rows, unit_slices)`` with the fixed rule's schedule, except for chunks of
    up to ``MAX_CHUNK_ROWS_FOR_UNIT_SPLIT`` rows (with the split possible and the weights
    under ``UNIT_SPLIT_MIN_WEIGHT_BYTES``), which may take the tuner's choice between the
    split and the batch chunks (:func:`_run_tuned`). ``kind``: the kernel's entry point."""
    cores = default_num_threads()     # one look per call: a system call, ~0.3 us
    rows = chunk_rows(batch_size, True, cores)
    groups = -(-num_units // 16)
    fixed = _unit_slices_for(batch_size, num_units, weight_rows, cores, rows)
    if (kind.endswith("_bf16") and _AMX and not fixed and cores > 1
            and weight_rows * groups * 64 * 2 >= _thresholds.AMX_UNIT_SPLIT_MIN_WEIGHT_BYTES):
        # on AMX tiles a step is one GEMM per core (both schedules give the same bits)
        fixed = cores
    tunable = (rows <= _thresholds.MAX_CHUNK_ROWS_FOR_UNIT_SPLIT and cores <= groups
               and weight_rows * groups * 64 * 4 < _thresholds.UNIT_SPLIT_MIN_WEIGHT_BYTES)
    _run_tuned(lambda slices: run(rows, slices), fixed, cores if tunable else None,
               (kind, batch_size, num_units, weight_rows), steps, n_threads, cores)


def lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len, hs, cs,
                 acts, c_unclipped, n_threads=1, bf16=False):
    """LSTM recurrence; see :func:`fastlstm.reference.lstm_forward`.

    Batches of one chunk split the hidden units over the cores instead of the batch.
    ``bf16``: bfloat16 products (``BF16_CELLS``; the same plans, weights packed in
    bfloat16 pairs).
    """
    cell = LSTMCellArgs(W, peepholes, use_peepholes, forget_bias, cell_clip)
    B, H = hs.shape[1], hs.shape[2]
    if (FUSED_STEP and W.dtype == np.float32) or bf16:
        # no BLAS runs in the fused step: no thread limit to set
        def run(rows, slices):
            _recurrent.lstm_forward(cell, xproj, seq_len, hs, cs, acts, c_unclipped,
                                    n_threads, ForwardPlan(
                                        rows, unit_slices=slices,
                                        **_fused_weights(W, None, B, rows, slices, n_threads,
                                                         bf16)))
        _run_fused(run, "forward_bf16" if bf16 else "forward", B, H, H, xproj.shape[0],
                   n_threads)
        return
    plan = unit_slices(B, H)
    if plan is None:
        with blas_threads(1):
            _recurrent.lstm_forward(cell, xproj, seq_len, hs, cs, acts, c_unclipped,
                                    n_threads, ForwardPlan(chunk_rows(B)))
        return
    n_slices, width = plan
    with blas_threads(1):
        _recurrent.lstm_forward_units(cell, xproj, seq_len, hs, cs, acts, c_unclipped,
                                      n_threads, ForwardPlan(
                                          W_packed=pack_unit_slices(W, n_slices, width),
                                          width=width))


def max_fused_input_width():
    """Largest ``input_size + num_units`` whose step computes ``x W_x`` itself on this
    CPU: ``MAX_FUSED_INPUT_WIDTH``, or ``MAX_FUSED_INPUT_WIDTH_LARGE_L2`` where a core's
    L2 holds ``LARGE_L2_BYTES`` (a property of the CPU, never of a timing: the two paths
    sum in different orders)."""
    if _recurrent.l2_cache_bytes() >= _thresholds.LARGE_L2_BYTES:
        return _thresholds.MAX_FUSED_INPUT_WIDTH_LARGE_L2
    return _thresholds.MAX_FUSED_INPUT_WIDTH


def fuses_input(dtype, batch_size, input_size, num_units):
    """True when :func:`lstm_forward_input` runs these sizes: float32 on the fused
    path with ``input_size + num_units`` at most :func:`max_fused_input_width` and, for a
    batch under ``MIN_BATCH_FUSED_WIDE_INPUT``, ``input_size <= num_units / 2`` or
    ``input_size + num_units <= MAX_FUSED_SMALL_INPUT_WIDTH`` (bfloat16 products take the
    same rule: their kernels imply the fused path)."""
    return (FUSED_STEP and np.dtype(dtype) == np.float32
            and input_size + num_units <= max_fused_input_width()
            and (batch_size >= _thresholds.MIN_BATCH_FUSED_WIDE_INPUT
                 or 2 * input_size <= num_units
                 or input_size + num_units <= _thresholds.MAX_FUSED_SMALL_INPUT_WIDTH))


def lstm_forward_input(x, W_x, bias, W, peepholes, use_peepholes, forget_bias, cell_clip,
                       seq_len, hs, cs, acts, c_unclipped, n_threads=1, bf16=False):
    """:func:`lstm_forward` with the input projection inside the fused step.

    The step computes ``z = [x_t, h] [W_x; W_h] + bias`` (TensorFlow 1.x's own order of
    the sum) instead of reading ``xproj = x W_x + bias`` from a GEMM before the loop:
    measured at the seed's size, that GEMM (K = I = 28, far below the machine's rate) and
    the 7 MB round trip of xproj were ~20% of an inference. Only where
    :func:`fuses_input`; x (T, B, I), W_x (I, 4H), bias (4H,). ``bf16``: bfloat16
    products, x rounded inside the step.
    """
    cell = LSTMCellArgs(W, peepholes, use_peepholes, forget_bias, cell_clip)
    # no BLAS runs in the fused step: no thread limit to set
    B = hs.shape[1]

    def run(rows, slices):
        _recurrent.lstm_forward(cell, _NO_XPROJ, seq_len, hs, cs, acts, c_unclipped,
                                n_threads, ForwardPlan(
                                    rows, unit_slices=slices, x=x, bias=bias,
                                    **_fused_weights(W, W_x, B, rows, slices, n_threads,
                                                     bf16)))
    _run_fused(run, "forward_input_bf16" if bf16 else "forward_input", B, hs.shape[2],
               W_x.shape[0] + W.shape[0], x.shape[0], n_threads)


def lstm_infer_input(x, W_x, bias, W, peepholes, use_peepholes, forget_bias, cell_clip,
                     seq_len, h0, c_state, out, out_batch_major, c_unclipped, n_threads=1,
                     bf16=False):
    """Inference without a history, where :func:`fuses_input`: as
    :func:`lstm_forward_input`, but the outputs go straight to ``out`` ((B, T, H) with
    ``out_batch_major``, else (T, B, H); written at existing steps only) and no hs / cs /
    acts are kept. ``c_state`` (B, H) holds the initial cell state on entry and each
    sequence's final one on return; ``h0`` (B, H) is the initial output.

    Measured at the seed's size: the history (hs and cs, 3.7 MB) and the transposing
    copy of the outputs were ~15% of an inference.
    """
    cell = LSTMCellArgs(W, peepholes, use_peepholes, forget_bias, cell_clip)
    B = h0.shape[0]

    def run(rows, slices):
        _recurrent.lstm_forward(cell, _NO_XPROJ, seq_len, h0[None], c_state[None], _NO_XPROJ,
                                c_unclipped, n_threads, ForwardPlan(
                                    rows, unit_slices=slices, x=x, bias=bias, out=out,
                                    out_batch_major=out_batch_major, c_final=c_state,
                                    **_fused_weights(W, W_x, B, rows, slices, n_threads,
                                                     bf16)))
    _run_fused(run, "infer_input_bf16" if bf16 else "infer_input", B, h0.shape[1],
               W_x.shape[0] + W.shape[0], x.shape[0], n_threads)


_NO_XPROJ = np.empty((0, 0, 0), np.float32)


def _packed(W, W_x=None, n_threads=1):
    """``[W_x; W_h]`` packed for the fused forward, in this thread's scratch buffer (the
    packed copy lives for one call; a fresh multi-megabyte array per call cost its page
    faults: 8.7 ms to pack I = H = 1024, 1.3 ms into a reused buffer)."""
    H, I = W.shape[0], 0 if W_x is None else W_x.shape[0]
    out = scratch("packed", (-(-H // 16), (I + H) * 64), np.float32)
    return _recurrent.pack_fused(W, W_x, out, n_threads)


def _packed_bf16(W, W_x=None, n_threads=1):
    """``[W_x; W_h]`` rounded to bfloat16 and packed in pairs for the fused bfloat16
    forward (``pack_fused_bf16``), in this thread's scratch buffer, as float32 bits."""
    H, I = W.shape[0], 0 if W_x is None else W_x.shape[0]
    out = scratch("packed_bf16", (-(-H // 16), (-(-I // 2) + -(-H // 2)) * 64), np.uint32)
    return _recurrent.pack_fused_bf16(W, W_x, out, n_threads).view(np.float32)


def _fused_weights(W, W_x, batch_size, rows, slices, n_threads, bf16=False):
    """The fused forward's weight arguments: the kernel's threads pack ``[W_x; W_h]``
    themselves, each what it reads (``pack_into``: the groups of its unit slices, or in
    batch chunks a copy of its own), except weights of ``PARALLEL_PACK_MIN_BYTES`` or more
    in batch chunks, which are packed here once, by all threads (``W_fused``): a copy per
    thread would double that work. A copy shared by the cores cost the next call's
    packing a wait on the other core for every line it had read: (8, 100, 64, 128) 50 us
    against 9.5 for its 393 KB (see ``_recurrent.lstm_forward``)."""
    if bf16:                     # packed once here, the threads' own copies not (yet)
        return {"W_fused": _packed_bf16(W, W_x, n_threads), "bf16": True}
    H, I = W.shape[0], 0 if W_x is None else W_x.shape[0]
    shape = (-(-H // 16), (I + H) * 64)
    copies = 1 if slices else min(n_threads, -(-batch_size // rows))
    if not slices and shape[0] * shape[1] * 4 >= _thresholds.PARALLEL_PACK_MIN_BYTES:
        return {"W_fused": _packed(W, W_x, n_threads)}
    out = scratch("packed", (copies * shape[0], shape[1]), np.float32)
    return {"pack_into": out, "pack_wh": W, "pack_wx": W_x}


def _packed_t(W, n_threads=1, bf16=False):
    """``W_h^T`` packed for the fused backward, in this thread's scratch buffer (``bf16``:
    rounded to bfloat16, in pairs, as float32 bits)."""
    H = W.shape[0]
    if bf16:
        out = scratch("packed_t_bf16", (-(-H // 64), 2 * H, 64), np.uint32)
        return _recurrent.pack_fused_t_bf16(W, out, n_threads).view(np.float32)
    return _recurrent.pack_fused_t(W, scratch("packed_t", (-(-H // 64), 4 * H, 64),
                                                np.float32), n_threads)


def lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts, c_unclipped,
                  d_outputs, dh, dc, dz, n_threads=1, bf16=False):
    """Backward of the LSTM; see :func:`fastlstm.reference.lstm_backward`. ``bf16``:
    bfloat16 products (``BF16_CELLS``)."""
    cell = LSTMCellArgs(W, peepholes, use_peepholes, 0.0, cell_clip)
    if (FUSED_STEP and W.dtype == np.float32) or bf16:
        _fused_backward(cell, seq_len, cs, acts, c_unclipped, d_outputs, dh, dc, dz,
                        n_threads, bf16)
        return
    plan = unit_slices(dh.shape[0], dh.shape[1])
    # the few-row AVX2 kernel takes the per-step dz W^T with W^T laid out (4H, H): one
    # transposing copy per call instead of BLAS packing all of W per step and chunk
    W_t = (np.ascontiguousarray(W.T)
           if W.dtype == np.float32 and _recurrent.small_gemm_enabled() else None)
    if plan is None:
        with blas_threads(1):
            _recurrent.lstm_backward(cell, seq_len, cs, acts, c_unclipped, d_outputs, dh, dc,
                                     dz, n_threads,
                                     BackwardPlan(chunk_rows(dh.shape[0], False), W_t=W_t))
        return
    n_slices, width = plan
    with blas_threads(1):
        _recurrent.lstm_backward_units(cell, seq_len, cs, acts, c_unclipped, d_outputs, dh,
                                       dc, dz, n_threads,
                                       BackwardPlan(n_slices=n_slices, width=width, W_t=W_t))


def _fused_backward(cell, seq_len, cs, acts, c_unclipped, d_outputs, dh, dc, dz, n_threads,
                    bf16=False):
    """The fused float32 backward (no BLAS): batch chunks, or the hidden units split in
    slices of whole 64-unit blocks of the packed W_h^T; a batch of one chunk with
    weights under ``UNIT_SPLIT_MIN_WEIGHT_BYTES`` may take the tuner's choice between the
    two (:func:`_run_tuned`)."""
    W = cell.W
    B, H = dh.shape
    big = W.nbytes >= _thresholds.UNIT_SPLIT_MIN_WEIGHT_BYTES
    # W_h^T of 16 MB or more: split whatever the batch, as in the forward (each core then
    # streams half of it per step): (64, 25, 1024, 1024) backward 138-141 -> 136-137 ms,
    # (64, 20, 512, 1024) 82-84 -> 79-80 (alternating, same bits)
    cores = default_num_threads()     # one look per call: a system call, ~0.3 us
    plan = unit_slices(B, H, True, any_batch=big, cores=cores)
    width = -(-(-(-H // cores)) // 64) * 64          # whole 64-unit blocks per slice
    # a batch of one chunk may take the tuner's choice (one slice: nothing to choose)
    split = width if not big and n_chunks(B, True, cores) == 1 and width < H else None

    def run(width):
        if width == 0:
            _recurrent.lstm_backward(cell, seq_len, cs, acts, c_unclipped, d_outputs, dh, dc,
                                     dz, n_threads, BackwardPlan(
                                         chunk_rows(B, True, cores),
                                         WT_fused=_packed_t(W, n_threads, bf16), bf16=bf16))
        else:
            _recurrent.lstm_backward_units(cell, seq_len, cs, acts, c_unclipped, d_outputs, dh,
                                           dc, dz, n_threads, BackwardPlan(
                                               n_slices=-(-H // width), width=width,
                                               WT_fused=_packed_t(W, n_threads, bf16),
                                               bf16=bf16))

    fixed = 0 if plan is None else width   # plan's width, rounded up to whole blocks
    _run_tuned(run, fixed, split, ("backward_bf16" if bf16 else "backward", B, H),
               d_outputs.shape[0], n_threads, cores)
