"""fastlstm: fast, exact recurrent networks (RNN, LSTM, peephole LSTM, GRU) on the CPU.

Public names only; docs/design.md describes the layers behind them.
"""

from . import interop
from ._threads import get_num_threads, threads
from .backends import available_backends
from .cells import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell, LSTMStateTuple
from .rnn import RNNCache, dynamic_rnn, dynamic_rnn_backward

__version__ = "0.2.0"

# The estimators import scikit-learn (0.7 s of a 0.78 s `import fastlstm`, measured with
# -X importtime): they load on first use, so the layer API imports fast.
_LAZY = {"LSTMClassifier": "estimators", "LSTMRegressor": "estimators",
         "SequenceScaler": "estimators", "datasets": "datasets",
         "augmentation": "augmentation", "export": "export", "frames": "frames",
         "from_long_frame": "frames", "dask": "dask"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = module if name == _LAZY[name] else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fastlstm' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

__all__ = [
    "BasicLSTMCell", "BasicRNNCell", "GRUCell", "LSTMCell", "LSTMClassifier", "LSTMRegressor",
    "LSTMStateTuple", "RNNCache", "SequenceScaler",
    "available_backends", "dynamic_rnn", "dynamic_rnn_backward", "get_num_threads",
    "interop", "threads", "__version__",
]
