"""fastlstm: fast, exact recurrent networks (RNN, LSTM, peephole LSTM) on the CPU.

Public names only; see DESIGN.md for the layers behind them.
"""

from . import interop
from ._threads import get_num_threads, threads
from .backends import available_backends
from .cells import BasicLSTMCell, BasicRNNCell, LSTMCell, LSTMStateTuple
from .estimators import LSTMClassifier, LSTMRegressor, SequenceScaler
from .rnn import RNNCache, dynamic_rnn, dynamic_rnn_backward

__version__ = "0.1.0"

__all__ = [
    "BasicLSTMCell", "BasicRNNCell", "LSTMCell", "LSTMClassifier", "LSTMRegressor",
    "LSTMStateTuple", "RNNCache", "SequenceScaler",
    "available_backends", "dynamic_rnn", "dynamic_rnn_backward", "get_num_threads",
    "interop", "threads", "__version__",
]
