"""The compiled kernels' own entry checks: a direct call with wrong shapes, lengths past
T or impossible counts raises ValueError instead of reading or writing out of bounds."""

import numpy as np
import pytest

from fastlstm import _recurrent
from fastlstm.backends._plans import BackwardPlan, ForwardPlan, LSTMCellArgs

B, T, H = 3, 4, 8


def lstm_args(dtype=np.float64, clip=0.0):
    """Valid arguments of ``lstm_forward`` (xproj path), by name."""
    r = np.random.RandomState(0)
    return dict(
        xproj=r.randn(T, B, 4 * H).astype(dtype), W=0.1 * r.randn(H, 4 * H).astype(dtype),
        peepholes=np.zeros((3, H), dtype), use_peepholes=False, forget_bias=1.0,
        cell_clip=clip, seq_len=np.array([4, 2, 0], np.int64),
        hs=np.zeros((T + 1, B, H), dtype), cs=np.zeros((T + 1, B, H), dtype),
        acts=np.zeros((T, B, 4 * H), dtype), c_unclipped=np.zeros((T, B, H), dtype),
        n_threads=1, chunk_rows=2)


def cell_of(a, forget_bias=0.0):
    return LSTMCellArgs(a["W"], a["peepholes"], a["use_peepholes"],
                        a.get("forget_bias", forget_bias), a["cell_clip"])


def forward(a):
    """``lstm_forward`` on the arguments of :func:`lstm_args` (batch chunks)."""
    return _recurrent.lstm_forward(cell_of(a), a["xproj"], a["seq_len"], a["hs"], a["cs"],
                                   a["acts"], a["c_unclipped"], a["n_threads"],
                                   ForwardPlan(a["chunk_rows"]))


def backward(a, plan=None):
    """``lstm_backward`` (or, with a unit-split ``plan``, ``lstm_backward_units``) on the
    arguments of :func:`backward_args`."""
    fn = _recurrent.lstm_backward if plan is None else _recurrent.lstm_backward_units
    return fn(cell_of(a), a["seq_len"], a["cs"], a["acts"], a["c_unclipped"], a["d_outputs"],
              a["dh"], a["dc"], a["dz"], a["n_threads"],
              BackwardPlan(a["chunk_rows"]) if plan is None else plan)


def backward_args(dtype=np.float64, clip=0.0):
    f = lstm_args(dtype, clip)
    forward(f)
    return dict(W=f["W"], peepholes=f["peepholes"], use_peepholes=False, cell_clip=clip,
                seq_len=f["seq_len"], cs=f["cs"], acts=f["acts"],
                c_unclipped=f["c_unclipped"], d_outputs=np.ones((T, B, H), dtype),
                dh=np.zeros((B, H), dtype), dc=np.zeros((B, H), dtype),
                dz=np.zeros((T, B, 4 * H), dtype), n_threads=1, chunk_rows=2)


def call(fn, args, **changes):
    return fn(dict(args, **changes))


def test_valid_direct_calls_run():
    call(forward, lstm_args())
    call(backward, backward_args())


@pytest.mark.parametrize("change, match", [
    (dict(seq_len=np.array([4, 5, 0], np.int64)), r"seq_len\[1\] = 5 is outside 0..4"),
    (dict(seq_len=np.array([4, -1, 0], np.int64)), r"seq_len\[1\] = -1 is outside"),
    (dict(seq_len=np.array([4, 2], np.int64)), "one length per sequence"),
    (dict(W=np.zeros((H, 3 * H))), r"W must have shape \(8, 32\)"),
    (dict(peepholes=np.zeros((2, H))), "peepholes must have shape"),
    (dict(xproj=np.zeros((T - 1, B, 4 * H))), "xproj must have shape"),
    (dict(cs=np.zeros((T, B, H))), "cs must have shape"),
    (dict(acts=np.zeros((T, B, H))), "acts must have shape"),
    (dict(cell_clip=1.0, c_unclipped=np.zeros((0, 0, 0))), "c_unclipped must have shape"),
    (dict(n_threads=0), "n_threads must be at least 1"),
    (dict(chunk_rows=0), "chunk_rows"),
])
def test_lstm_forward_refuses_what_it_would_overrun(change, match):
    with pytest.raises(ValueError, match=match):
        call(forward, lstm_args(), **change)


@pytest.mark.parametrize("change, match", [
    (dict(seq_len=np.array([9, 2, 0], np.int64)), r"seq_len\[0\] = 9 is outside"),
    (dict(d_outputs=np.ones((T, B + 1, H))), "d_outputs must have shape"),
    (dict(dz=np.zeros((T, B, H))), "dz must have shape"),
    (dict(dc=np.zeros((B, H + 1))), "dc must have shape"),
    (dict(cs=np.zeros((T, B, H))), "cs must have shape"),
    (dict(acts=np.zeros((0, 0, 0))), "acts must have shape"),
    (dict(W=np.zeros((H + 1, 4 * H))), "W must have shape"),
])
def test_lstm_backward_refuses_what_it_would_overrun(change, match):
    with pytest.raises(ValueError, match=match):
        call(backward, backward_args(), **change)


def test_unit_split_entry_points_check_their_slices():
    f = lstm_args()
    packed = np.zeros((2, H * 4 * 4))

    def units(width):
        _recurrent.lstm_forward_units(cell_of(f), f["xproj"], f["seq_len"], f["hs"], f["cs"],
                                      f["acts"], f["c_unclipped"], 1,
                                      ForwardPlan(W_packed=packed, width=width))

    units(4)                                               # 2 slices of 4 units: H = 8
    with pytest.raises(ValueError, match="do not cover H = 8"):
        units(3)                                           # 2 x 3 < 8 units
    with pytest.raises(ValueError, match="W_packed"):
        _recurrent.lstm_forward_units(cell_of(f), f["xproj"], f["seq_len"], f["hs"], f["cs"],
                                      f["acts"], f["c_unclipped"], 1, ForwardPlan(width=4))
    b = backward_args()
    with pytest.raises(ValueError, match="do not cover H = 8"):
        backward(b, BackwardPlan(n_slices=1, width=4))
    backward(b, BackwardPlan(n_slices=2, width=4))
    b["seq_len"] = np.array([7, 2, 0], np.int64)
    with pytest.raises(ValueError, match=r"seq_len\[0\] = 7"):
        backward(b, BackwardPlan(n_slices=2, width=4))


def test_rnn_entry_points_check_lengths_and_shapes():
    r = np.random.RandomState(0)
    xproj, W = r.randn(T, B, H), 0.1 * r.randn(H, H)
    hs = np.zeros((T + 1, B, H))
    ok = np.array([4, 1, 0], np.int64)
    _recurrent.rnn_forward(xproj, W, ok, hs, 1, 2)
    with pytest.raises(ValueError, match=r"seq_len\[2\] = 5"):
        _recurrent.rnn_forward(xproj, W, np.array([4, 1, 5], np.int64), hs, 1, 2)
    with pytest.raises(ValueError, match="xproj must have shape"):
        _recurrent.rnn_forward(xproj[:-1], W, ok, hs, 1, 2)
    dh, dz = np.zeros((B, H)), np.zeros((T, B, H))
    _recurrent.rnn_backward(W, ok, hs, np.ones((T, B, H)), dh, dz, 1, 2)
    with pytest.raises(ValueError, match="hs must have shape"):
        _recurrent.rnn_backward(W, ok, hs[:-1], np.ones((T, B, H)), dh, dz, 1, 2)
    with pytest.raises(ValueError, match=r"seq_len\[0\] = 6"):
        _recurrent.rnn_backward(W, np.array([6, 1, 0], np.int64), hs, np.ones((T, B, H)), dh,
                                dz, 1, 2)


def test_gemm_blocks_checks_the_product_shapes():
    a, b = np.ones((5, 3)), np.ones((3, 4))
    out = np.empty((5, 4))
    _recurrent.gemm_blocks(a, b, out, False, False, 2, 2, 1)
    np.testing.assert_array_equal(out, a @ b)
    with pytest.raises(ValueError, match="does not give"):
        _recurrent.gemm_blocks(a, np.ones((4, 4)), out, False, False, 2, 2, 1)
    with pytest.raises(ValueError, match="does not give"):
        _recurrent.gemm_blocks(a, b, np.empty((5, 5)), False, False, 2, 2, 1)
    with pytest.raises(ValueError, match="at least 1"):
        _recurrent.gemm_blocks(a, b, out, False, False, 0, 2, 1)
