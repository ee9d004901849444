"""The ``"numpy"`` backend: the reference recurrences themselves (always available)."""

from ..reference import lstm_backward, lstm_forward, rnn_backward, rnn_forward  # noqa: F401

NAME = "numpy"
