"""Sequences as users have them -> one internal form: a zero-padded array plus lengths.

Accepted ``X`` (see :class:`fastlstm.LSTMClassifier`):

* a 3-D array ``(n_samples, n_steps, n_features)`` (``layout="ntf"``) or
  ``(n_samples, n_features, n_steps)`` (``layout="nft"``, aeon / sktime);
* a 2-D array or DataFrame: with ``n_steps``, each row holds ``n_steps * n_features``
  values step by step; without it, each row is one univariate sequence;
* a list of 2-D arrays ``(length_i, n_features)`` (``layout="nft"``: ``(n_features,
  length_i)``, aeon's unequal-length collections) or 1-D arrays (univariate) of
  different lengths.

Internally: ``Sequences(values (n, T_max, F), lengths (n,), kind)`` where ``kind``
remembers the format so that a transformer can give back what it was given.
"""

from dataclasses import dataclass
import warnings

import numpy as np
from scipy import sparse

#: A 3-D X whose feature axis is at least this many times its step axis (for the layout
#: given) draws a warning naming ``layout``: aeon's BasicMotions, (n, 6, 100), read as 6
#: steps of 100 features, scored 0.33 instead of 0.975. Conservative: MNIST's 28 x 28
#: rows, and sequences of a few steps of wide embeddings, stay below it.
TRANSPOSED_RATIO = 8


class LayoutWarning(UserWarning):
    """X's shape suggests the other ``layout`` (a UserWarning)."""


@dataclass
class Sequences:
    """Padded sequences.

    Attributes
    ----------
    values : ndarray (n_samples, T_max, n_features)
        Zero past each sequence's end.
    lengths : ndarray (n_samples,) int64
    kind : {"3d", "2d", "list"}
        The input format.
    n_columns : int or None
        Columns of a 2-D input (``n_steps * n_features``).
    """

    values: np.ndarray
    lengths: np.ndarray
    kind: str
    n_columns: int = None

    @property
    def n_features(self):
        return self.values.shape[2]

    def __len__(self):
        return self.values.shape[0]


class NonNumericInputError(ValueError, TypeError):
    """X holds objects that are not numbers (a ValueError, and a TypeError as NumPy's
    own conversion error is)."""


def _numeric(arr, what):
    """``arr`` as a real-valued array; objects that are numbers are converted."""
    if sparse.issparse(arr):
        raise ValueError(f"Sparse input is not supported: {what} is a sparse matrix; "
                         f"sequences need dense arrays (X.toarray())")
    arr = np.asarray(arr)
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {what} has dtype {arr.dtype}")
    if arr.dtype == object:
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise NonNumericInputError(
                f"{what} has dtype object and is not numeric: {exc}") from exc
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers, got dtype {arr.dtype}")
    return arr


def _check_finite(arr, what):
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} contains NaN or infinity")


def to_sequences(X, *, layout="ntf", n_steps=None, dtype=np.float32):
    """Convert any accepted ``X`` to :class:`Sequences` of ``dtype``.

    Raises
    ------
    ValueError
        Naming the problem: wrong number of dimensions, object or non-numeric data,
        NaN / inf, an empty sequence, list items that disagree on the number of
        features, ``n_steps`` that does not divide the number of columns.
    """
    if hasattr(X, "to_numpy") and hasattr(X, "columns"):       # pandas / polars frame
        X = X.to_numpy()
    if isinstance(X, (list, tuple)) and len(X) > 0 and not np.isscalar(X[0]):
        items = [np.asarray(x) for x in X]
        if all(x.ndim == items[0].ndim for x in items) and items[0].ndim in (1, 2) and (
                len({x.shape for x in items}) > 1 or items[0].ndim == 2):
            if layout not in ("ntf", "nft"):
                raise ValueError(f"layout must be 'ntf' or 'nft', got {layout!r}")
            return _from_list(items, dtype, layout)
    if isinstance(X, (list, tuple)) and len(X) == 0:
        raise ValueError("X is empty: no sequences given")
    arr = _numeric(X, "X")
    if arr.ndim == 3:
        if layout not in ("ntf", "nft"):
            raise ValueError(f"layout must be 'ntf' or 'nft', got {layout!r}")
        if arr.shape[0] == 0:
            raise ValueError("X is empty: 0 sequences")
        if arr.shape[1] == 0 or arr.shape[2] == 0:
            raise ValueError(f"X of shape {arr.shape} holds empty sequences")
        _warn_if_transposed(arr.shape, layout)
        values = arr if layout == "ntf" else arr.transpose(0, 2, 1)
        values = np.ascontiguousarray(values, dtype=dtype)
        _check_finite(values, "X")
        return Sequences(values, np.full(len(values), values.shape[1], np.int64), "3d")
    if arr.ndim == 2:
        n, cols = arr.shape
        if n == 0:
            raise ValueError("X is empty: 0 sequences (rows)")
        if cols == 0:
            raise ValueError(f"Found array with 0 feature(s) (shape={arr.shape}) while a "
                             f"minimum of 1 is required: X holds empty sequences")
        if n_steps is None:
            values = arr.reshape(n, cols, 1)
        else:
            if cols % n_steps:
                raise ValueError(f"X has {cols} columns, not a multiple of n_steps={n_steps}")
            values = arr.reshape(n, n_steps, cols // n_steps)
        values = np.ascontiguousarray(values, dtype=dtype)
        _check_finite(values, "X")
        return Sequences(values, np.full(n, values.shape[1], np.int64), "2d", cols)
    raise ValueError(f"X must be a 3-D array, a 2-D array (or DataFrame) or a list of 2-D "
                     f"arrays; got an array with {arr.ndim} dimension(s) of shape {arr.shape}. "
                     f"Reshape your data: X.reshape(1, -1) for one univariate sequence, "
                     f"X.reshape(-1, 1) for sequences of length 1")


def _user_stacklevel():
    """The stacklevel of the first caller outside fastlstm and scikit-learn."""
    import sys
    frame, level = sys._getframe(2), 2
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
            "fastlstm", "sklearn"):
        frame, level = frame.f_back, level + 1
    return level


def _warn_if_transposed(shape, layout):
    steps, features = (shape[1], shape[2]) if layout == "ntf" else (shape[2], shape[1])
    if features >= TRANSPOSED_RATIO * steps:
        other = "nft" if layout == "ntf" else "ntf"
        axes = ("(samples, features, steps), as aeon and sktime hold panels"
                if other == "nft" else "(samples, steps, features)")
        warnings.warn(f"X of shape {shape} is read with layout={layout!r} as {steps} "
                      f"step(s) of {features} features; if it is {axes}, pass "
                      f"layout={other!r}", LayoutWarning, stacklevel=_user_stacklevel())


def _from_list(items, dtype, layout="ntf"):
    if items[0].ndim == 1:
        items = [x.reshape(-1, 1) for x in items]
    elif layout == "nft":                      # aeon: (n_channels, n_timepoints_i)
        items = [x.T for x in items]
    n_features = {x.shape[1] for x in items}
    if len(n_features) > 1:
        hint = ""
        if len({x.shape[0] for x in items}) == 1:
            hint = (f"; they agree on their first axis ({items[0].shape[0]}): if each is "
                    f"(features, steps), as aeon holds unequal-length series, pass "
                    f"layout={'nft' if layout == 'ntf' else 'ntf'!r}")
        raise ValueError(f"the sequences in X disagree on the number of features: "
                         f"{sorted(n_features)[:10]}{hint}")
    lengths = np.array([x.shape[0] for x in items], np.int64)
    if np.any(lengths == 0):
        raise ValueError(f"X holds empty sequences (length 0) at positions "
                         f"{np.flatnonzero(lengths == 0)[:10].tolist()}")
    F = n_features.pop()
    if F == 0:
        raise ValueError("the sequences in X have 0 features")
    values = np.zeros((len(items), int(lengths.max()), F), dtype)
    for k, x in enumerate(items):
        values[k, :len(x)] = _numeric(x, f"X[{k}]")
    _check_finite(values, "X")
    return Sequences(values, lengths, "list")


def from_sequences(seq, like, layout="ntf"):
    """Give ``seq.values`` back in the format ``like`` (a :class:`Sequences`) came in.

    A 3-D input comes back 3-D, a 2-D one 2-D, a list as a list of arrays; 3-D arrays
    and the items of a list in ``layout``.
    """
    if like.kind == "list":
        if layout == "nft":
            return [seq.values[k, :L].T.copy() for k, L in enumerate(seq.lengths)]
        return [seq.values[k, :L].copy() for k, L in enumerate(seq.lengths)]
    if like.kind == "2d":
        return seq.values.reshape(len(seq), -1)
    return seq.values.transpose(0, 2, 1) if layout == "nft" else seq.values
