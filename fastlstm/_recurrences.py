"""The layer glue of each cell kind: which history its forward keeps, how its kernels are
called, and its parameters' gradients from ``dz`` after the backward loop.

:mod:`fastlstm.rnn` does what every kind shares (validation, layouts, the input
projection, the input gradient) and hands the kind-specific parts to the
:class:`Recurrence` of :func:`for_cell`; the kernels come from the backend
(:class:`fastlstm.backends.Backend`), never by name.
"""

import numpy as np

from . import _layout


class Recurrence:
    """Glue of the kinds whose recurrent product is ``h W`` over every gate (basic RNN).

    Attributes
    ----------
    kind : fastlstm._layout.CellKind
    """

    kind = _layout.KINDS["rnn"]

    def history(self, cell, T, B, training):
        """What the forward keeps besides ``hs``: name -> (shape, zero_tails), where
        ``zero_tails`` says the steps past each end must read as zero afterwards (they
        are summed over by the products after the backward loop)."""
        return {}

    def forward(self, be, cell, xproj, seq_len, hs, hist, n_threads):
        be.kernel(self.kind.name, "forward")(xproj, cell.params["recurrent_kernel"], seq_len,
                                             hs, n_threads)

    def backward(self, be, cell, cache, d_out, dh, dc, dz, n_threads):
        be.kernel(self.kind.name, "backward")(cell.params["recurrent_kernel"], cache.seq_len,
                                              cache.hs, d_out, dh, dz, n_threads)

    def reads_dz_past_the_ends(self, cell):
        """The gradients after the loop read ``dz`` at missing steps (then zeroed)."""
        return False

    def parameter_gradients(self, be, cell, cache, dz, rows, n_threads):
        """``kernel``, ``recurrent_kernel``, ``bias`` (and the kind's extras) from ``dz``
        (T, B, G*H), summed over the rows ``t * B + b`` of ``rows`` (or all)."""
        return self._stacked(be, cell, cache, dz, rows, n_threads)

    @staticmethod
    def _stacked(be, cell, cache, dz, rows, n_threads):
        # The weight and bias gradients in one product, [x, h_prev, 1]^T dz: the column of
        # ones gives the bias gradient in the same pass. On the AVX-512 tiles without a
        # concatenated copy; on BLAS with one when I < H (x^T dz alone, a few rows and a
        # long sum, ran far below the machine's rate).
        T, B, I = cache.x.shape
        H = cell.num_units
        dz2 = dz.reshape(T * B, dz.shape[2])
        x2, h2 = cache.x.reshape(T * B, I), cache.hs[:-1].reshape(T * B, H)
        ones = np.broadcast_to(np.ones(1, cell.dtype), (T * B, 1))
        d_w = be.gemm.matmul_tn_stacked([x2, h2, ones], dz2, n_threads, merge=I < H,
                                        rows=rows)
        return {"kernel": d_w[:I], "recurrent_kernel": d_w[I:I + H], "bias": d_w[I + H]}


class LSTMRecurrence(Recurrence):
    """The LSTM cells: cell state, activations, clipping and peepholes."""

    kind = _layout.KINDS["lstm"]

    def history(self, cell, T, B, training):
        H = cell.num_units
        clip = (cell.cell_clip or 0.0) > 0
        # cs past the ends is read only by the peephole gradients' sums over all steps;
        # inference keeps no activations: the kernels skip a quarter of their stores
        return {"cs": ((T + 1, B, H), cell.use_peepholes),
                "acts": ((T, B, 4 * H) if training else (0, 0, 0), False),
                "c_unclipped": ((T, B, H) if clip else (0, 0, 0), False)}

    def kernel_arguments(self, cell, seq_len, hs, hist, n_threads):
        """The LSTM kernels' arguments after ``xproj`` (or ``x, W_x, bias``)."""
        return (cell.params["recurrent_kernel"], peepholes(cell), cell.use_peepholes,
                cell.forget_bias, cell.cell_clip or 0.0, seq_len, hs, hist["cs"],
                hist["acts"], hist["c_unclipped"], n_threads)

    def forward(self, be, cell, xproj, seq_len, hs, hist, n_threads):
        be.kernel("lstm", "forward")(xproj, *self.kernel_arguments(cell, seq_len, hs, hist,
                                                                   n_threads))

    def backward(self, be, cell, cache, d_out, dh, dc, dz, n_threads):
        h = cache.history
        be.kernel("lstm", "backward")(cell.params["recurrent_kernel"], peepholes(cell),
                                      cell.use_peepholes, cell.cell_clip or 0.0,
                                      cache.seq_len, h["cs"], h["acts"], h["c_unclipped"],
                                      d_out, dh, dc, dz, n_threads)

    def reads_dz_past_the_ends(self, cell):
        return cell.use_peepholes

    def parameter_gradients(self, be, cell, cache, dz, rows, n_threads):
        grads = self._stacked(be, cell, cache, dz, rows, n_threads)
        if cell.use_peepholes:
            # dz is zero at missing steps, so these sums see only existing steps.
            H, cs = cell.num_units, cache.history["cs"]
            d_i = dz[:, :, self.kind.gate_slice("i", H)]
            d_f = dz[:, :, self.kind.gate_slice("f", H)]
            d_o = dz[:, :, self.kind.gate_slice("o", H)]
            grads["w_i_diag"] = (d_i * cs[:-1]).sum(axis=(0, 1))
            grads["w_f_diag"] = (d_f * cs[:-1]).sum(axis=(0, 1))
            grads["w_o_diag"] = (d_o * cs[1:]).sum(axis=(0, 1))
        return grads


class GRURecurrence(Recurrence):
    """The GRU: its candidate's recurrent product sees the reset gate, so the recurrent
    kernel's candidate block (and, with ``reset_after``, the recurrent bias) get their
    gradients from the saved activations, not from ``h_prev^T dz`` alone."""

    kind = _layout.KINDS["gru"]

    def history(self, cell, T, B, training):
        H = cell.num_units
        # the activations past the ends are summed over (as zeros) by the candidate's
        # gradient products below
        return {"acts": ((T, B, 3 * H) if training else (0, 0, 0), training),
                "hzc": ((T, B, H) if training and cell.reset_after else (0, 0, 0), False)}

    def forward(self, be, cell, xproj, seq_len, hs, hist, n_threads):
        be.kernel("gru", "forward")(xproj, cell.params["recurrent_kernel"],
                                    recurrent_bias(cell), cell.reset_after, seq_len, hs,
                                    hist["acts"], hist["hzc"], n_threads)

    def backward(self, be, cell, cache, d_out, dh, dc, dz, n_threads):
        h = cache.history
        be.kernel("gru", "backward")(cell.params["recurrent_kernel"], cell.reset_after,
                                     cache.seq_len, cache.hs, h["acts"], h["hzc"], d_out, dh,
                                     dz, n_threads)

    def reads_dz_past_the_ends(self, cell):
        return True

    def parameter_gradients(self, be, cell, cache, dz, rows, n_threads):
        grads = self._stacked(be, cell, cache, dz, rows, n_threads)
        T, B, _ = cache.x.shape
        H = cell.num_units
        r = cache.history["acts"][:, :, :H].reshape(T * B, H)
        dz_c = dz[:, :, 2 * H:].reshape(T * B, H)
        h_prev = cache.hs[:-1].reshape(T * B, H)
        if rows is not None:
            r, dz_c, h_prev = r[rows], dz_c[rows], h_prev[rows]
        if cell.reset_after:
            # the candidate's recurrent part is r * (h W_c + b_hc)
            d_hzc = dz_c * r
            grads["recurrent_kernel"][:, 2 * H:] = be.gemm.matmul_tn(
                np.ascontiguousarray(h_prev), d_hzc, n_threads)
            d_bh = grads["bias"].copy()
            d_bh[2 * H:] = d_hzc.sum(axis=0)
            grads["recurrent_bias"] = d_bh
        else:
            # ... and here (r * h) W_c
            grads["recurrent_kernel"][:, 2 * H:] = be.gemm.matmul_tn(
                r * h_prev, np.ascontiguousarray(dz_c), n_threads)
        return grads


_BY_KIND = {"rnn": Recurrence(), "lstm": LSTMRecurrence(), "gru": GRURecurrence()}


def for_cell(cell):
    """The :class:`Recurrence` of ``cell``'s kind."""
    return _BY_KIND[cell.kind]


def peepholes(cell):
    """Peephole vectors stacked (3, H), zeros when the cell has none."""
    if cell.use_peepholes:
        return np.stack([cell.params[n] for n in _layout.PEEPHOLE_NAMES])
    return np.zeros((3, cell.num_units), cell.dtype)


def recurrent_bias(cell):
    """The GRU's ``recurrent_bias`` (3H,), zeros without ``reset_after``."""
    if cell.reset_after:
        return cell.params["recurrent_bias"]
    return np.zeros(3 * cell.num_units, cell.dtype)
