"""Pure-NumPy recurrences: the oracle every compiled backend is compared with.

These functions define the **kernel contract** that every backend implements with the
same signature (see ``fastlstm/backends``). :mod:`fastlstm.rnn` does the rest of a
layer around them: validation, layout, the input projection ``x W_x + b`` for all steps
as one GEMM before the recurrence, and the weight gradients as GEMMs after it.

Shapes, stated once (all arrays time-major, C-contiguous, one float dtype)::

    T steps, B sequences, H units, G gate blocks (1 RNN, 4 LSTM, 3 GRU)
    xproj         (T, B, G*H)   x_t W_x + b, every step
    W             (H, G*H)      recurrent_kernel
    peepholes     (3, H)        w_i_diag, w_f_diag, w_o_diag (zeros when unused)
    seq_len       (B,)          int64, 0 <= L_b <= T
    hs, cs        (T+1, B, H)   hs[0], cs[0]: initial state; hs[t+1], cs[t+1]: after step t
    acts          (T, B, 4H)    LSTM activations [sigmoid(i), tanh(j), sigmoid(f), sigmoid(o)],
                                or (0, 0, 0) in inference: then not written
                  (T, B, 3H)    GRU activations [sigmoid(r), sigmoid(u), tanh(c)], or (0, 0, 0)
    b_h           (3H,)         GRU recurrent_bias (zeros without reset_after)
    hzc           (T, B, H)     GRU with reset_after: h_{t-1} W_hc + b_hc, the candidate's
                                recurrent part before the reset gate (training only),
                                else (0, 0, 0)
    c_unclipped   (T, B, H)     LSTM cell before cell_clip (written only when clipping)
    d_outputs     (T, B, H)     dLoss/d outputs
    dh, dc        (B, H)        in: dLoss/d final state; out: dLoss/d initial state
    dz            (T, B, G*H)   out: dLoss/d xproj (zero on entry)

The GRU (gate order r, u, c; ``W_r``, ``W_u``, ``W_c`` the blocks of ``W``)::

    r, u = sigmoid(xproj_r + h W_r), sigmoid(xproj_u + h W_u)
    c = tanh(xproj_c + (r * h) W_c)                       # reset_after=False (TF1)
    c = tanh(xproj_c + r * (h W_c + b_hc))                # reset_after=True (PyTorch)
    h' = u * h + (1 - u) * c

(with ``reset_after`` the ``b_h`` blocks are added to ``h W_r`` and ``h W_u`` too).

Variable lengths: step ``t`` exists for sequence ``b`` only when ``t < seq_len[b]``. The
kernels write ``hs, cs, acts, c_unclipped, dz`` only at existing steps and leave the
rest untouched (the caller allocates them zeroed), so that outputs past a sequence's end
are zero and its final state is ``hs[seq_len[b], b]``, TensorFlow's ``dynamic_rnn``
semantics. The reference computes every row at every step and masks (clear, not fast);
the compiled backends skip the missing steps.

``cell_clip <= 0`` means no clipping. ``n_threads`` is accepted and ignored here.

``operand`` (keyword only, not part of the kernel contract): a function applied to the
left operand of every recurrent product (``h``, ``r * h``, ``dz``), e.g. rounding to
bfloat16 for the emulation of ``compute_dtype="bfloat16"``
(:mod:`fastlstm.backends._bf16_emulation`, which passes ``W`` already rounded).
"""

import numpy as np


def sigmoid(x):
    """Logistic function; ``exp`` overflow for very negative ``x`` correctly gives 0."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _valid_rows(t, seq_len):
    """Boolean (B,) mask of the sequences that have a step ``t``."""
    return t < seq_len


def _same(a):
    return a


def rnn_forward(xproj, W, seq_len, hs, n_threads=1, *, operand=_same):
    """Basic RNN recurrence: ``hs[t+1] = tanh(xproj[t] + hs[t] @ W)`` at existing steps."""
    h = hs[0].copy()
    for t in range(xproj.shape[0]):
        rows = _valid_rows(t, seq_len)
        h_new = np.tanh(xproj[t] + operand(h) @ W)
        hs[t + 1, rows] = h_new[rows]
        h = np.where(rows[:, None], h_new, h)


def rnn_backward(W, seq_len, hs, d_outputs, dh, dz, n_threads=1, *, operand=_same):
    """Backward of :func:`rnn_forward`; ``tanh' = 1 - h^2`` from the saved outputs."""
    for t in reversed(range(d_outputs.shape[0])):
        rows = _valid_rows(t, seq_len)
        dz_t = (dh + d_outputs[t]) * (1.0 - hs[t + 1] ** 2)
        dz[t, rows] = dz_t[rows]
        dh[...] = np.where(rows[:, None], operand(dz_t) @ W.T, dh)


def lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len,
                 hs, cs, acts, c_unclipped, n_threads=1, *, operand=_same):
    """LSTM recurrence (TF1 ``LSTMCell``), gate order (i, j, f, o).

    The additions are done in TensorFlow's order, ``(z_f + forget_bias) + w_f * c``, so
    that float results match it as closely as the operation order allows.
    """
    H = W.shape[0]
    w_i, w_f, w_o = peepholes
    h = hs[0].copy()
    c = cs[0].copy()
    for t in range(xproj.shape[0]):
        rows = _valid_rows(t, seq_len)
        z = xproj[t] + operand(h) @ W
        z_i, z_j, z_f, z_o = (z[:, k * H:(k + 1) * H] for k in range(4))
        z_f = z_f + forget_bias
        if use_peepholes:
            z_i = z_i + w_i * c
            z_f = z_f + w_f * c
        i, j, f = sigmoid(z_i), np.tanh(z_j), sigmoid(z_f)
        c_new = f * c + i * j
        if cell_clip > 0:
            c_unclipped[t, rows] = c_new[rows]
            c_new = np.clip(c_new, -cell_clip, cell_clip)
        if use_peepholes:
            z_o = z_o + w_o * c_new         # the output gate sees the new, clipped cell
        o = sigmoid(z_o)
        h_new = o * np.tanh(c_new)
        if acts.size:
            acts[t, rows] = np.concatenate([i, j, f, o], axis=1)[rows]
        hs[t + 1, rows] = h_new[rows]
        cs[t + 1, rows] = c_new[rows]
        h = np.where(rows[:, None], h_new, h)
        c = np.where(rows[:, None], c_new, c)


def lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts, c_unclipped,
                  d_outputs, dh, dc, dz, n_threads=1, *, operand=_same):
    """Backward of :func:`lstm_forward`, derivatives written from the saved activations.

    ``sigmoid' = s (1 - s)``, ``tanh' = 1 - t^2``; where ``cell_clip`` clipped the cell
    the gradient through it is zero (TensorFlow's ``clip_by_value`` gradient: it passes
    at ``|c| <= cell_clip``, equality included).
    """
    H = W.shape[0]
    w_i, w_f, w_o = peepholes
    for t in reversed(range(d_outputs.shape[0])):
        rows = _valid_rows(t, seq_len)
        i, j, f, o = (acts[t, :, k * H:(k + 1) * H] for k in range(4))
        c_prev, c_new = cs[t], cs[t + 1]
        dh_t = dh + d_outputs[t]
        tanh_c = np.tanh(c_new)
        dz_o = dh_t * tanh_c * o * (1.0 - o)
        dc_t = dc + dh_t * o * (1.0 - tanh_c ** 2)
        if use_peepholes:
            dc_t = dc_t + dz_o * w_o
        if cell_clip > 0:
            u = c_unclipped[t]
            dc_t = dc_t * ((u >= -cell_clip) & (u <= cell_clip))
        dz_i = dc_t * j * i * (1.0 - i)
        dz_j = dc_t * i * (1.0 - j ** 2)
        dz_f = dc_t * c_prev * f * (1.0 - f)
        dc_prev = dc_t * f
        if use_peepholes:
            dc_prev = dc_prev + dz_i * w_i + dz_f * w_f
        dz_t = np.concatenate([dz_i, dz_j, dz_f, dz_o], axis=1)
        dz[t, rows] = dz_t[rows]
        dh[...] = np.where(rows[:, None], operand(dz_t) @ W.T, dh)
        dc[...] = np.where(rows[:, None], dc_prev, dc)


def gru_forward(xproj, W, b_h, reset_after, seq_len, hs, acts, hzc, n_threads=1, *,
                operand=_same):
    """GRU recurrence: TF1 ``GRUCell`` (``reset_after=False``) or the PyTorch / Keras
    ``reset_after=True`` form; gate order (r, u, c). ``h' = u * h + (1 - u) * c``, in
    TensorFlow's order of operations."""
    H = W.shape[0]
    h = hs[0].copy()
    for t in range(xproj.shape[0]):
        rows = _valid_rows(t, seq_len)
        xp = xproj[t]
        if reset_after:
            hz = operand(h) @ W + b_h
            r = sigmoid(xp[:, :H] + hz[:, :H])
            u = sigmoid(xp[:, H:2 * H] + hz[:, H:2 * H])
            hz_c = hz[:, 2 * H:]
            if hzc.size:
                hzc[t, rows] = hz_c[rows]
            c = np.tanh(xp[:, 2 * H:] + r * hz_c)
        else:
            g = operand(h) @ W[:, :2 * H]
            r = sigmoid(xp[:, :H] + g[:, :H])
            u = sigmoid(xp[:, H:2 * H] + g[:, H:])
            c = np.tanh(xp[:, 2 * H:] + operand(r * h) @ W[:, 2 * H:])
        h_new = u * h + (1.0 - u) * c
        if acts.size:
            acts[t, rows] = np.concatenate([r, u, c], axis=1)[rows]
        hs[t + 1, rows] = h_new[rows]
        h = np.where(rows[:, None], h_new, h)


def gru_backward(W, reset_after, seq_len, hs, acts, hzc, d_outputs, dh, dz, n_threads=1, *,
                 operand=_same):
    """Backward of :func:`gru_forward` from the saved activations: ``dz`` is dLoss/d
    ``xproj``; the recurrent weights' gradient follows from it after the loop
    (:mod:`fastlstm._recurrences`)."""
    H = W.shape[0]
    W_ru, W_c = W[:, :2 * H], W[:, 2 * H:]
    for t in reversed(range(d_outputs.shape[0])):
        rows = _valid_rows(t, seq_len)
        r, u, c = (acts[t, :, k * H:(k + 1) * H] for k in range(3))
        h_prev = hs[t]
        dh_t = dh + d_outputs[t]
        dz_c = dh_t * (1.0 - u) * (1.0 - c ** 2)
        dz_u = dh_t * (h_prev - c) * u * (1.0 - u)
        if reset_after:
            dz_r = dz_c * hzc[t] * r * (1.0 - r)
            dh_prev = dh_t * u + operand(np.concatenate([dz_r, dz_u, dz_c * r], axis=1)) @ W.T
        else:
            d_rh = operand(dz_c) @ W_c.T
            dz_r = d_rh * h_prev * r * (1.0 - r)
            dh_prev = (dh_t * u + d_rh * r
                       + operand(np.concatenate([dz_r, dz_u], axis=1)) @ W_ru.T)
        dz_t = np.concatenate([dz_r, dz_u, dz_c], axis=1)
        dz[t, rows] = dz_t[rows]
        dh[...] = np.where(rows[:, None], dh_prev, dh)
