"""The small objects the LSTM kernels of ``fastlstm._recurrent`` take instead of long
argument lists: the cell's side of a call, and the plan of how it runs.

Plain classes with ``__slots__``: built on every call (a B=1 inference takes ~50 us), so
they cost a fraction of a microsecond, not a dataclass's few. The kernels read their
attributes once at entry and check them (shapes, combinations) before touching memory.
"""


class LSTMCellArgs:
    """The cell of an LSTM kernel call.

    Parameters
    ----------
    W : ndarray (H, 4H)
        ``recurrent_kernel`` (the BLAS-path unit split reads ``ForwardPlan.W_packed``).
    peepholes : ndarray (3, H)
        ``w_i_diag``, ``w_f_diag``, ``w_o_diag``; zeros without peepholes.
    use_peepholes : bool
    forget_bias : float
    cell_clip : float
        0 for no clipping.
    """

    __slots__ = ("W", "peepholes", "use_peepholes", "forget_bias", "cell_clip")

    def __init__(self, W, peepholes, use_peepholes, forget_bias=0.0, cell_clip=0.0):
        self.W, self.peepholes = W, peepholes
        self.use_peepholes = bool(use_peepholes)
        self.forget_bias, self.cell_clip = float(forget_bias), float(cell_clip)


class ForwardPlan:
    """How an LSTM forward runs (``lstm_forward``, ``lstm_forward_units``).

    Parameters
    ----------
    chunk_rows : int
        Rows per batch chunk (one chunk = one thread's whole time loop).
    unit_slices : int
        Fused path: > 0 splits the hidden units into that many slices of 16-unit groups
        instead of the batch (``chunk_rows`` unused).
    W_fused : ndarray, optional
        Fused path: ``W`` (or ``[W_x; W_h]`` with ``x``) packed by ``pack_fused``.
    pack_into, pack_wh, pack_wx : ndarray, optional
        Fused path, instead of ``W_fused``: the threads pack ``W_h`` (and ``W_x``) into
        ``pack_into`` themselves, each what it reads.
    x, bias : ndarray, optional
        Fused path: ``x`` (T, B, I) and ``bias`` (4H): the step computes ``x W_x + b``
        itself and ``xproj`` is not read.
    out, out_batch_major, c_final : optional
        Fused inference without a history: outputs straight into ``out`` ((B, T, H) with
        ``out_batch_major``, else (T, B, H)), final cell states into ``c_final`` (B, H).
    W_packed, width : optional
        BLAS-path unit split (``lstm_forward_units``): the slices' columns of ``W`` and
        the slice width.
    bf16 : bool
        Fused path: bfloat16 products, ``W_fused`` packed by ``pack_fused_bf16`` (viewed
        as float32) and the kernels of ``src_cy/fused_tiles_bf16.h``.
    """

    __slots__ = ("chunk_rows", "unit_slices", "W_fused", "pack_into", "pack_wh", "pack_wx",
                 "x", "bias", "out", "out_batch_major", "c_final", "W_packed", "width",
                 "bf16")

    def __init__(self, chunk_rows=1, unit_slices=0, W_fused=None, pack_into=None,
                 pack_wh=None, pack_wx=None, x=None, bias=None, out=None,
                 out_batch_major=False, c_final=None, W_packed=None, width=0, bf16=False):
        self.chunk_rows, self.unit_slices = chunk_rows, unit_slices
        self.W_fused, self.pack_into, self.pack_wh, self.pack_wx = (W_fused, pack_into,
                                                                    pack_wh, pack_wx)
        self.x, self.bias = x, bias
        self.out, self.out_batch_major, self.c_final = out, bool(out_batch_major), c_final
        self.W_packed, self.width = W_packed, width
        self.bf16 = bool(bf16)


class BackwardPlan:
    """How an LSTM backward runs (``lstm_backward``, ``lstm_backward_units``).

    Parameters
    ----------
    chunk_rows : int
        Rows per batch chunk.
    n_slices, width : int
        The hidden-unit split (``lstm_backward_units``): slices and their width.
    WT_fused : ndarray, optional
        Fused path: ``W.T`` packed by ``pack_fused_t``.
    W_t : ndarray (4H, H), optional
        BLAS path: ``W.T``, C-contiguous, for the few-row AVX2 kernel.
    bf16 : bool
        Fused path: bfloat16 products, ``WT_fused`` packed by ``pack_fused_t_bf16``
        (viewed as float32).
    """

    __slots__ = ("chunk_rows", "n_slices", "width", "WT_fused", "W_t", "bf16")

    def __init__(self, chunk_rows=1, n_slices=0, width=0, WT_fused=None, W_t=None,
                 bf16=False):
        self.chunk_rows, self.n_slices, self.width = chunk_rows, n_slices, width
        self.WT_fused, self.W_t, self.bf16 = WT_fused, W_t, bool(bf16)
