"""The ``"cuda"`` backend: numba.cuda recurrences with the time loop on the GPU.

The host side of :mod:`._cuda_kernels`: it plans each recurrence
(:mod:`._cuda_plan`: a block-local, a persistent or a per-step layout of tiles, each
block keeping its slice of ``W_h`` in shared memory), launches it, and moves data.

Two levels:

* ``<kind>_forward_device`` / ``<kind>_backward_device`` take device arrays and never
  copy between host and device; their scratch (sorted state, double buffers) comes from a
  per-thread :class:`Workspace` that is reused, not allocated per call.
* ``<kind>_forward`` / ``<kind>_backward``, the kernel contract of the CPU backends
  (fastlstm/reference.py), copy each input to the device once and each output back once
  (:data:`TRANSFERS` counts them); output-only buffers are zeroed on the device instead.

The input projection and the weight gradients are still the layer's GEMMs on the host
(:mod:`fastlstm.rnn`).

Tested on the CPU under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, see
tests/test_cuda_sim.py), whose cooperative grids have one block: there a persistent plan
runs as one block that owns every tile. ``FASTLSTM_CUDA_REGIME``, ``FASTLSTM_CUDA_ROWS``,
``FASTLSTM_CUDA_UNITS`` and ``FASTLSTM_CUDA_THREADS`` force a regime, a tile or the block
size (tests, benchmarks); :func:`forced_plan` does the same in code.
"""

import collections
import contextlib
import ctypes
import dataclasses
import os
import threading
import warnings

import numba
import numpy as np

try:
    from numba import cuda
except ImportError as exc:                      # numba without its CUDA target
    raise ImportError("numba.cuda is not importable: pip install 'fastlstm[cuda]'") from exc

if not cuda.is_available():
    raise ImportError("no usable CUDA GPU: numba.cuda.is_available() is False (set "
                      "NUMBA_ENABLE_CUDASIM=1 to run the kernels in Numba's simulator)")


def _check_kernels_compile():
    """Raise ImportError where numba.cuda imports but cannot compile a kernel.

    numba-cuda 0.30 (in maintenance mode) registers an overload of ``np.row_stack`` when
    it first compiles a kernel, and NumPy 2.5 removed ``row_stack``: every launch then
    fails with an AttributeError from deep inside numba (NVIDIA/numba-cuda#907; seen on
    an H100 with numba-cuda 0.30.4 and NumPy 2.5.2). Importing the module that does it
    here says so at import, where the backend is chosen, instead.
    """
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":   # the simulator compiles nothing
        return
    try:
        import numba.cuda.cudaimpl  # noqa: F401  (numba-cuda's NumPy overloads)
    except AttributeError as exc:
        raise ImportError(
            f"numba.cuda cannot compile kernels with NumPy {np.__version__} ({exc}; "
            "NVIDIA/numba-cuda#907): install 'numpy<2.5' (pip install 'fastlstm[cuda]' "
            "pins it)") from exc


_check_kernels_compile()

from . import _cuda_kernels as _kernels          # noqa: E402  (after the checks above)
from ._cuda_plan import GpuLimits, plan_recurrence  # noqa: E402

NAME = "cuda"
#: Cell kinds with kernels here.
CELLS = ("rnn", "lstm", "gru")
#: Its layer GEMMs: BLAS blocks on a thread pool (fastlstm._gemm with kernels=None).
GEMM_KERNELS = None
#: The contract's outputs are copied back whole; rows past a sequence's end are zeroed
#: on the device, so the layer zeroes them on the host too.
NEEDS_ZEROED_HISTORY = True

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
#: The simulator's limits: small shared memory, enough SMs for the tests' forced tiles.
SIMULATOR_LIMITS = GpuLimits(sm_count=64, shared_per_block=48 * 1024)
#: Dynamic shared memory a block gets without opting in.
DEFAULT_SHARED = 48 * 1024
#: Host <-> device copies made by the kernel contract: ``"to_device"``, ``"to_host"``.
TRANSFERS = collections.Counter()
_THREADS_1D = 256

_forced = {}
_ENV_FORCED = (("regime", "FASTLSTM_CUDA_REGIME", str),
               ("rows_per_tile", "FASTLSTM_CUDA_ROWS", int),
               ("units_per_tile", "FASTLSTM_CUDA_UNITS", int),
               ("threads", "FASTLSTM_CUDA_THREADS", int))


@contextlib.contextmanager
def forced_plan(**overrides):
    """Within the ``with`` block, plan every recurrence with these keywords of
    :func:`~fastlstm.backends._cuda_plan.plan_recurrence` (``regime``, ``rows_per_tile``,
    ``units_per_tile``, ``threads``): tests and benchmarks run each regime in turn."""
    global _forced
    saved = _forced
    _forced = {**saved, **overrides}
    try:
        yield
    finally:
        _forced = saved


_limits = []


def device_limits():
    """The current GPU's :class:`GpuLimits` (the simulator's: :data:`SIMULATOR_LIMITS`).
    ``FASTLSTM_CUDA_SHARED`` caps the shared memory a block may use (bytes)."""
    if not _limits:
        if SIMULATOR:
            limits = SIMULATOR_LIMITS
        else:
            dev = cuda.get_current_device()
            shared = int(os.environ.get("FASTLSTM_CUDA_SHARED", "0") or 0)
            limits = GpuLimits(dev.MULTIPROCESSOR_COUNT,
                               shared or dev.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                               dev.MAX_THREADS_PER_BLOCK)
        _limits.append(limits)
    return _limits[0]


def plan_for(kind, batch_size, num_units, dtype):
    """The :class:`~fastlstm.backends._cuda_plan.RecurrencePlan` this backend runs, with
    any forced keywords (:func:`forced_plan`, then ``FASTLSTM_CUDA_*``) applied."""
    overrides = {key: cast(os.environ[env]) for key, env, cast in _ENV_FORCED
                 if os.environ.get(env)}
    overrides.update(_forced)
    return plan_recurrence(kind, batch_size, num_units, np.dtype(dtype).itemsize,
                           device_limits(), **overrides)


def sort_order(seq_len):
    """Rows by decreasing length (stable): the order the tiles walk the batch in."""
    return np.argsort(-np.asarray(seq_len), kind="stable").astype(np.int64)


# ------------------------------------------------------------------ device memory
class Workspace:
    """Device buffers by name, kept between calls and reallocated only when a shape or
    dtype changes (allocating per call cost more than small steps)."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        """The buffer ``name`` (contents undefined)."""
        shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = cuda.device_array(shape, dtype)
            self._buffers[name] = buf
        return buf

    def zeros(self, name, shape, dtype):
        """The buffer ``name``, zeroed on the device."""
        buf = self.get(name, shape, dtype)
        if buf.size:
            flat = buf.reshape(buf.size)
            _kernels.fill_zero[_blocks(buf.size), _THREADS_1D](flat)
        return buf


_local = threading.local()


def workspace():
    """This thread's :class:`Workspace`."""
    if not hasattr(_local, "workspace"):
        _local.workspace = Workspace()
    return _local.workspace


def _blocks(n):
    return max(1, -(-n // _THREADS_1D))


def _upload(host, dev):
    """Copy ``host`` into the device array ``dev`` (one counted transfer)."""
    if host.size:
        dev.copy_to_device(np.ascontiguousarray(host))
        TRANSFERS["to_device"] += 1
    return dev


def _download(dev, host):
    """Copy the device array ``dev`` into ``host`` (one counted transfer)."""
    if host.size:
        if host.flags.c_contiguous:
            dev.copy_to_host(host)
        else:
            host[...] = dev.copy_to_host()
        TRANSFERS["to_host"] += 1


def _inputs(ws, **arrays):
    """Upload each array into the workspace buffer of its name."""
    return [_upload(a, ws.get(name, a.shape, a.dtype)) for name, a in arrays.items()]


def _history(ws, name, host):
    """A zeroed device copy of ``host`` (T + 1, B, H) with only ``host[0]`` uploaded."""
    dev = ws.zeros(name, host.shape, host.dtype)
    _upload(host[0], dev[0])
    return dev


# ---------------------------------------------------------------------- launching
_opted_in = set()


def _compiled(kernel, args):
    return kernel.compile(tuple(numba.typeof(a) for a in args))


def _allow_shared(compiled, nbytes):
    """Let ``compiled`` use ``nbytes`` (> 48 KiB) of dynamic shared memory (the driver's
    opt-in, which numba's launcher does not make)."""
    if id(compiled) in _opted_in:
        return
    handle = compiled.library.get_cufunc().handle
    handle = int(getattr(handle, "value", None) or int(handle))
    attribute = 8                        # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    status = ctypes.CDLL("libcuda.so.1").cuFuncSetAttribute(
        ctypes.c_void_p(handle), ctypes.c_int(attribute), ctypes.c_int(nbytes))
    if status != 0:
        raise RuntimeError(f"cuFuncSetAttribute failed ({status}) opting in to {nbytes} "
                           "bytes of shared memory; set FASTLSTM_CUDA_SHARED=49152 to "
                           "plan within the default")
    _opted_in.add(id(compiled))


def _launch(kernel, grid, plan, args):
    if plan.shared_bytes > DEFAULT_SHARED and not SIMULATOR:
        _allow_shared(_compiled(kernel, args), plan.shared_bytes)
    kernel[grid, plan.threads, 0, plan.shared_bytes](*args)


def _cooperative_blocks(kernel, plan, args):
    """How many blocks of ``kernel`` can be resident at once (a grid barrier needs all);
    0 where numba would not launch it cooperatively (its grid barrier not found in the
    compiled code): a grid barrier outside a cooperative launch can hang."""
    if SIMULATOR:
        return kernel.overloads[None].max_cooperative_grid_blocks(plan.threads)
    compiled = _compiled(kernel, args)
    if not getattr(compiled, "cooperative", True):
        return 0
    if plan.shared_bytes > DEFAULT_SHARED:
        _allow_shared(compiled, plan.shared_bytes)
    return compiled.max_cooperative_grid_blocks(plan.threads, plan.shared_bytes)


def _recur(kind, direction, plan, dtype, n_steps, make_args, step_phases):
    """Run a recurrence's ``n_steps`` under ``plan``.

    ``make_args(a, b, phases)`` gives the kernel's arguments for steps ``a .. b`` in the
    kernel's convention (forward ``t0, t1``; backward ``t_hi, t_lo``) and the phase bits;
    ``step_phases`` are a step's phases in order, launched one by one per step.
    """
    forward = direction == "forward"
    if plan.regime == "per_step":
        kernel = _kernels.kernel(kind, direction, dtype, False)
        for t in (range(n_steps) if forward else range(n_steps - 1, -1, -1)):
            for phase in step_phases:
                args = make_args(t, t + 1, phase) if forward else make_args(t + 1, t, phase)
                _launch(kernel, plan.grid, plan, args)
        return
    persistent = plan.regime == "persistent"
    kernel = _kernels.kernel(kind, direction, dtype, persistent)
    every = sum(step_phases)
    args = make_args(0, n_steps, every) if forward else make_args(n_steps, 0, every)
    grid = plan.grid
    if persistent:       # fewer resident blocks than tiles: blocks take several (reloading)
        resident = _cooperative_blocks(kernel, plan, args)
        if resident == 0:
            warnings.warn("numba did not compile the persistent kernel for a cooperative "
                          "launch; running the recurrence a launch per step instead",
                          RuntimeWarning, stacklevel=3)
            _recur(kind, direction, dataclasses.replace(plan, regime="per_step"), dtype,
                   n_steps, make_args, step_phases)
            return
        grid = min(grid, resident)
    _launch(kernel, grid, plan, args)


def _gather(src, order, dst):
    _kernels.gather_rows[_blocks(dst.size), _THREADS_1D](src, order, dst)


def _scatter(src, order, seq_len, dst):
    _kernels.scatter_rows[_blocks(src.size), _THREADS_1D](src, order, seq_len, dst)


def _tiles(plan):
    return plan.rows_per_tile, plan.units_per_tile, plan.unit_tiles


# ------------------------------------------------------------ device-level kernels
def rnn_forward_device(xproj, W, seq_len, order, hs, plan=None):
    """Basic RNN recurrence on device arrays; see :func:`lstm_forward_device`."""
    T, B = xproj.shape[:2]
    H = W.shape[0]
    if T == 0 or B == 0:
        return
    plan = plan or plan_for("rnn", B, H, hs.dtype)
    h_buf = workspace().get("h_buf", (2, B, H), hs.dtype)
    _gather(hs[0], order, h_buf[0])
    dt = hs.dtype.type

    def args(a, b, phases):
        return (xproj, W, seq_len, order, *_tiles(plan), a, b, hs, h_buf, dt(0))
    _recur("rnn", "forward", plan, hs.dtype, T, args, (1,))


def rnn_backward_device(W, seq_len, order, hs, d_outputs, dh, dz, plan=None):
    """Backward of :func:`rnn_forward_device`; see :func:`lstm_backward_device`."""
    T, B, H = d_outputs.shape
    if T == 0 or B == 0:
        return
    plan = plan or plan_for("rnn", B, H, dh.dtype)
    ws = workspace()
    dh_buf = ws.get("dh_buf", (B, H), dh.dtype)
    dz_buf = ws.get("dz_buf", (2, B, H), dh.dtype)
    dt = dh.dtype.type

    def args(a, b, phases):
        return (W, seq_len, order, *_tiles(plan), a, b, phases, hs, d_outputs, dh, dz, dh_buf,
                dz_buf, dt(0), dt(1))
    _recur("rnn", "backward", plan, dh.dtype, T, args, (1, 2))
    _scatter(dh_buf, order, seq_len, dh)


def lstm_forward_device(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len,
                        order, hs, cs, acts, c_unclipped, plan=None):
    """LSTM recurrence on device arrays (no host copies).

    Parameters
    ----------
    xproj : device array, shape (T, B, 4H)
    W : device array, shape (H, 4H)
    peepholes : device array, shape (3, H)
    seq_len : device array of int, shape (B,)
    order : device array of int64, shape (B,)
        :func:`sort_order` of ``seq_len``.
    hs, cs : device arrays, shape (T + 1, B, H)
        ``[0]`` holds the initial state; steps that exist are written.
    acts : device array, shape (T, B, 4H), or (0, B, 4H) for inference
    c_unclipped : device array, shape (T, B, H) (written where ``cell_clip > 0``)
    plan : RecurrencePlan, optional
        By default :func:`plan_for`'s.

    See :func:`fastlstm.reference.lstm_forward` for the arithmetic.
    """
    T, B = xproj.shape[:2]
    H = W.shape[0]
    if T == 0 or B == 0:
        return
    plan = plan or plan_for("lstm", B, H, hs.dtype)
    ws = workspace()
    h_buf = ws.get("h_buf", (2, B, H), hs.dtype)
    c_buf = ws.get("c_buf", (B, H), hs.dtype)
    _gather(hs[0], order, h_buf[0])
    _gather(cs[0], order, c_buf)
    dt = hs.dtype.type

    def args(a, b, phases):
        return (xproj, W, peepholes, bool(use_peepholes), dt(forget_bias), dt(cell_clip),
                seq_len, order, *_tiles(plan), a, b, hs, cs, acts, c_unclipped, h_buf, c_buf,
                dt(0), dt(1))
    _recur("lstm", "forward", plan, hs.dtype, T, args, (1,))


def lstm_backward_device(W, peepholes, use_peepholes, cell_clip, seq_len, order, cs, acts,
                         c_unclipped, d_outputs, dh, dc, dz, plan=None):
    """Backward of :func:`lstm_forward_device` on device arrays.

    ``dh``, ``dc`` (B, H): dL/d(final state) in, dL/d(initial state) out; ``dz``
    (T, B, 4H): the gate pre-activations' gradients, written for the steps that exist.
    See :func:`fastlstm.reference.lstm_backward`.
    """
    T, B, H = d_outputs.shape
    if T == 0 or B == 0:
        return
    plan = plan or plan_for("lstm", B, H, dh.dtype)
    ws = workspace()
    dh_buf = ws.get("dh_buf", (B, H), dh.dtype)
    dc_buf = ws.get("dc_buf", (B, H), dh.dtype)
    dz_buf = ws.get("dz_buf", (2, B, 4 * H), dh.dtype)
    dt = dh.dtype.type

    def args(a, b, phases):
        return (W, peepholes, bool(use_peepholes), dt(cell_clip), seq_len, order,
                *_tiles(plan), a, b, phases, cs, acts, c_unclipped, d_outputs, dh, dc, dz,
                dh_buf, dc_buf, dz_buf, dt(0), dt(1))
    _recur("lstm", "backward", plan, dh.dtype, T, args, (1, 2))
    _scatter(dh_buf, order, seq_len, dh)
    _scatter(dc_buf, order, seq_len, dc)


def gru_forward_device(xproj, W, recurrent_bias, reset_after, seq_len, order, hs, acts, hzc,
                       plan=None):
    """GRU recurrence on device arrays; see :func:`lstm_forward_device` and
    :func:`fastlstm.reference.gru_forward`."""
    T, B = xproj.shape[:2]
    H = W.shape[0]
    if T == 0 or B == 0:
        return
    plan = plan or plan_for("gru", B, H, hs.dtype)
    ws = workspace()
    h_buf = ws.get("h_buf", (2, B, H), hs.dtype)
    rh_buf = ws.get("rh_buf", (1, B, H), hs.dtype)
    u_buf = ws.get("u_buf", (B, H), hs.dtype)
    _gather(hs[0], order, h_buf[0])
    dt = hs.dtype.type

    def args(a, b, phases):
        return (xproj, W, recurrent_bias, bool(reset_after), seq_len, order, *_tiles(plan), a,
                b, phases, hs, acts, hzc, h_buf, rh_buf, u_buf, dt(0), dt(1))
    _recur("gru", "forward", plan, hs.dtype, T, args, (1,) if reset_after else (1, 2))


def gru_backward_device(W, reset_after, seq_len, order, hs, acts, hzc, d_outputs, dh, dz,
                        plan=None):
    """Backward of :func:`gru_forward_device`; see :func:`lstm_backward_device`."""
    T, B, H = d_outputs.shape
    if T == 0 or B == 0:
        return
    plan = plan or plan_for("gru", B, H, dh.dtype)
    ws = workspace()
    dh_buf = ws.get("dh_buf", (B, H), dh.dtype)
    dz_buf = ws.get("dz_buf", (2, B, 3 * H), dh.dtype)
    dhu_buf = ws.get("dhu_buf", (B, H), dh.dtype)
    dt = dh.dtype.type

    def args(a, b, phases):
        return (W, bool(reset_after), seq_len, order, *_tiles(plan), a, b, phases, hs, acts,
                hzc, d_outputs, dh, dz, dh_buf, dz_buf, dhu_buf, dt(0), dt(1))
    _recur("gru", "backward", plan, dh.dtype, T, args, (1, 4) if reset_after else (1, 2, 4))
    _scatter(dh_buf, order, seq_len, dh)


# --------------------------------------------- the kernel contract (host arrays)
def _outputs(ws, **arrays):
    return [ws.zeros(name, a.shape, a.dtype) for name, a in arrays.items()]


def rnn_forward(xproj, W, seq_len, hs, n_threads=1):
    """Basic RNN recurrence; see :func:`fastlstm.reference.rnn_forward`."""
    if xproj.shape[0] == 0 or xproj.shape[1] == 0:
        return
    ws = workspace()
    d_xp, d_W, d_len, d_ord = _inputs(ws, xproj=xproj, W=W, seq_len=seq_len,
                                      order=sort_order(seq_len))
    d_hs = _history(ws, "hs", hs)
    rnn_forward_device(d_xp, d_W, d_len, d_ord, d_hs)
    _download(d_hs, hs)


def rnn_backward(W, seq_len, hs, d_outputs, dh, dz, n_threads=1):
    """Backward of the basic RNN; see :func:`fastlstm.reference.rnn_backward`."""
    if d_outputs.shape[0] == 0 or d_outputs.shape[1] == 0:
        return
    ws = workspace()
    d_W, d_len, d_ord, d_hs, d_out, d_dh = _inputs(
        ws, W=W, seq_len=seq_len, order=sort_order(seq_len), hs=hs, d_outputs=d_outputs,
        dh=dh)
    (d_dz,) = _outputs(ws, dz=dz)
    rnn_backward_device(d_W, d_len, d_ord, d_hs, d_out, d_dh, d_dz)
    _download(d_dh, dh)
    _download(d_dz, dz)


def lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len, hs, cs,
                 acts, c_unclipped, n_threads=1):
    """LSTM recurrence; see :func:`fastlstm.reference.lstm_forward`."""
    if xproj.shape[0] == 0 or xproj.shape[1] == 0:
        return
    ws = workspace()
    d_xp, d_W, d_peep, d_len, d_ord = _inputs(
        ws, xproj=xproj, W=W, peepholes=peepholes, seq_len=seq_len, order=sort_order(seq_len))
    d_hs, d_cs = _history(ws, "hs", hs), _history(ws, "cs", cs)
    d_acts, d_cun = _outputs(ws, acts=acts, c_unclipped=c_unclipped)
    lstm_forward_device(d_xp, d_W, d_peep, use_peepholes, forget_bias, cell_clip, d_len, d_ord,
                        d_hs, d_cs, d_acts, d_cun)
    for dev, host in ((d_hs, hs), (d_cs, cs), (d_acts, acts), (d_cun, c_unclipped)):
        _download(dev, host)


def lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts, c_unclipped,
                  d_outputs, dh, dc, dz, n_threads=1):
    """Backward of the LSTM; see :func:`fastlstm.reference.lstm_backward`."""
    if d_outputs.shape[0] == 0 or d_outputs.shape[1] == 0:
        return
    ws = workspace()
    d_W, d_peep, d_len, d_ord, d_cs, d_acts, d_cun, d_out, d_dh, d_dc = _inputs(
        ws, W=W, peepholes=peepholes, seq_len=seq_len, order=sort_order(seq_len), cs=cs,
        acts=acts, c_unclipped=c_unclipped, d_outputs=d_outputs, dh=dh, dc=dc)
    (d_dz,) = _outputs(ws, dz=dz)
    lstm_backward_device(d_W, d_peep, use_peepholes, cell_clip, d_len, d_ord, d_cs, d_acts,
                         d_cun, d_out, d_dh, d_dc, d_dz)
    for dev, host in ((d_dh, dh), (d_dc, dc), (d_dz, dz)):
        _download(dev, host)


def gru_forward(xproj, W, recurrent_bias, reset_after, seq_len, hs, acts, hzc, n_threads=1):
    """GRU recurrence; see :func:`fastlstm.reference.gru_forward`."""
    if xproj.shape[0] == 0 or xproj.shape[1] == 0:
        return
    ws = workspace()
    d_xp, d_W, d_bh, d_len, d_ord = _inputs(
        ws, xproj=xproj, W=W, recurrent_bias=recurrent_bias, seq_len=seq_len,
        order=sort_order(seq_len))
    d_hs = _history(ws, "hs", hs)
    d_acts, d_hzc = _outputs(ws, acts=acts, hzc=hzc)
    gru_forward_device(d_xp, d_W, d_bh, reset_after, d_len, d_ord, d_hs, d_acts, d_hzc)
    for dev, host in ((d_hs, hs), (d_acts, acts), (d_hzc, hzc)):
        _download(dev, host)


def gru_backward(W, reset_after, seq_len, hs, acts, hzc, d_outputs, dh, dz, n_threads=1):
    """Backward of the GRU; see :func:`fastlstm.reference.gru_backward`."""
    if d_outputs.shape[0] == 0 or d_outputs.shape[1] == 0:
        return
    ws = workspace()
    d_W, d_len, d_ord, d_hs, d_acts, d_hzc, d_out, d_dh = _inputs(
        ws, W=W, seq_len=seq_len, order=sort_order(seq_len), hs=hs, acts=acts, hzc=hzc,
        d_outputs=d_outputs, dh=dh)
    (d_dz,) = _outputs(ws, dz=dz)
    gru_backward_device(d_W, reset_after, d_len, d_ord, d_hs, d_acts, d_hzc, d_out, d_dh, d_dz)
    _download(d_dh, dh)
    _download(d_dz, dz)
