"""``compute_dtype="bfloat16"`` emulated in NumPy: the reference recurrences with every
recurrent product's operands rounded to bfloat16 (float32 sums), for the cell kinds and
CPUs that have no bfloat16 kernels of their own.

Slow (the reference computes every row at every step and masks, plus a rounding pass
per product), but the same arithmetic as the kernels up to the order of each sum:
products of bfloat16 values are exact in float32. The tests compare the kernels with it.
Signatures: the kernel contract of :mod:`fastlstm.reference` (``n_threads`` ignored).
"""

from .. import reference
from .._bfloat16 import round_to_bfloat16 as _rounded

#: Like the reference's, these kernels compute every row and mask: their history and
#: ``dz`` must start at zero.
NEEDS_ZEROED_HISTORY = True


def rnn_forward(xproj, W, seq_len, hs, n_threads=1):
    reference.rnn_forward(xproj, _rounded(W), seq_len, hs, operand=_rounded)


def rnn_backward(W, seq_len, hs, d_outputs, dh, dz, n_threads=1):
    reference.rnn_backward(_rounded(W), seq_len, hs, d_outputs, dh, dz, operand=_rounded)


def lstm_forward(xproj, W, peepholes, use_peepholes, forget_bias, cell_clip, seq_len, hs, cs,
                 acts, c_unclipped, n_threads=1):
    reference.lstm_forward(xproj, _rounded(W), peepholes, use_peepholes, forget_bias,
                           cell_clip, seq_len, hs, cs, acts, c_unclipped, operand=_rounded)


def lstm_backward(W, peepholes, use_peepholes, cell_clip, seq_len, cs, acts, c_unclipped,
                  d_outputs, dh, dc, dz, n_threads=1):
    reference.lstm_backward(_rounded(W), peepholes, use_peepholes, cell_clip, seq_len, cs,
                            acts, c_unclipped, d_outputs, dh, dc, dz, operand=_rounded)


def gru_forward(xproj, W, b_h, reset_after, seq_len, hs, acts, hzc, n_threads=1):
    reference.gru_forward(xproj, _rounded(W), b_h, reset_after, seq_len, hs, acts, hzc,
                          operand=_rounded)


def gru_backward(W, reset_after, seq_len, hs, acts, hzc, d_outputs, dh, dz, n_threads=1):
    reference.gru_backward(_rounded(W), reset_after, seq_len, hs, acts, hzc, d_outputs, dh,
                           dz, operand=_rounded)
