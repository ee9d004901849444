"""scikit-learn estimators: LSTMClassifier, LSTMRegressor and SequenceScaler.

Conventions (scikit-learn's): ``__init__`` only stores parameters; validation happens
in ``fit`` (``_parameter_constraints``); fitted state ends in ``_``; randomness comes from
``check_random_state(self.random_state)``; ``backend`` and ``n_jobs`` are ordinary
parameters. A fit builds everything in local variables and assigns the fitted
attributes at the end, so an error leaves the estimator as it was.
"""

import contextlib
import copy
import numbers
import sys
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
from sklearn.exceptions import ConvergenceWarning, DataConversionWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state, compute_class_weight
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _thresholds
from ._sequences import Sequences, from_sequences, to_sequences
from ._threads import blas_threads, chosen_threads, threads
from ._bfloat16 import check_compute_dtype
from .backends import get_backend
from .network import CELL_KINDS, READOUTS, SequenceNetwork
from .optimizers import OPTIMIZERS



#: Parameters that count something: numbers.Integral admits True and False, these do not.
_SIZE_PARAMETERS = ("hidden_size", "num_layers", "input_projection", "batch_size", "max_iter",
                    "n_iter_no_change", "n_steps", "n_jobs")


def _refuse_boolean_sizes(estimator, names):
    for name in names:
        value = getattr(estimator, name)
        if isinstance(value, (bool, np.bool_)):
            raise ValueError(f"The {name!r} parameter of {type(estimator).__name__} must be "
                             f"an int, got the boolean {value!r}")




def _length_groups(rows, seq, index=None):
    """Split the batch ``rows`` when padding it would more than ``MAX_PADDING_FACTOR``-fold
    its existing steps: into groups of rows, by decreasing length, each as long as the
    next row is at least its group's longest / ``MAX_PADDING_FACTOR``.

    Parameters
    ----------
    rows : ndarray of int
        The batch: positions into ``index`` (or into ``seq`` when ``index`` is None).
    seq : Sequences
    index : ndarray of int, optional
        Maps positions to sequences of ``seq``.

    Yields
    ------
    group : ndarray of int
        Positions (a subset of ``rows``; all of ``rows``, in order, when the batch
        stays whole).
    X : ndarray (len(group), longest length of the group, n_features)
    lengths : ndarray (len(group),)
    """
    seqs = rows if index is None else index[rows]
    lengths = seq.lengths[seqs]
    longest = int(lengths.max())
    if len(rows) * longest <= _thresholds.MAX_PADDING_FACTOR * int(lengths.sum()):
        yield rows, seq.values[seqs, :longest], lengths
        return
    order = np.argsort(-lengths, kind="stable")
    ordered = lengths[order]
    start = 0
    while start < len(order):
        top = int(ordered[start])
        # the first row shorter than top / factor starts the next group
        stop = start + int(np.searchsorted(-ordered[start:], -top / _thresholds.MAX_PADDING_FACTOR,
                                           side="right"))
        group = order[start:stop]
        yield rows[group], seq.values[seqs[group], :top], lengths[group]
        start = stop


def _layout_hint(X, layout, n_features):
    """A hint for a feature-count mismatch: the other axis order, or how a 2-D X (a
    table) is read and what to pass instead."""
    if n_features > 1 and np.ndim(X) == 2 and not isinstance(X, (list, tuple)):
        table = "DataFrame" if hasattr(X, "columns") else "array"
        return (f"; a 2-D {table} is read as one univariate sequence per row (with "
                f"n_steps set, as rows of n_steps x n_features values): pass sequences "
                f"as a 3-D array or a list of (steps, features) arrays, or a long table "
                f"(one row per step) through fastlstm.from_long_frame(frame, "
                f"id_column=..., time_column=...)")
    shape = getattr(X, "shape", None)
    if shape is None and isinstance(X, (list, tuple)) and len(X):
        shape = (len(X),) + np.shape(X[0])           # a list: its first item's axes
    if shape is None or len(shape) != 3 or (
            shape[1] if layout == "ntf" else shape[2]) != n_features:
        return ""
    other = "nft" if layout == "ntf" else "ntf"
    return (f"; X's other axis has {n_features}: if X is in layout {other!r} "
            f"({'(samples, features, steps)' if other == 'nft' else '(samples, steps, features)'}"
            f"), transpose it to the layout {layout!r} the model was fitted with")


#: Columns of ``history_``, one entry per epoch.
_HISTORY_KEYS = ("epoch", "loss", "val_loss", "val_score", "learning_rate", "seconds")
#: learning_rate_schedule="plateau": the learning rate is divided by _PLATEAU_FACTOR each
#: time _PLATEAU_PATIENCE epochs in a row fail to improve the watched quantity by tol
#: (scikit-learn's MLP "adaptive" rule, for every optimizer).
_PLATEAU_PATIENCE = 2
_PLATEAU_FACTOR = 5.0


def _tqdm():
    """tqdm's class, or None when it is not installed."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


def _check_callbacks(callbacks):
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    callbacks = list(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise ValueError(f"callbacks must be callables, got {cb!r}")
    return callbacks


def _base_arguments(local_vars):
    """The arguments of ``_BaseSequenceModel.__init__`` out of a subclass ``__init__``'s
    ``locals()`` (scikit-learn reads each estimator's own explicit signature)."""
    import inspect
    names = inspect.signature(_BaseSequenceModel.__init__).parameters
    return {name: local_vars[name] for name in names if name != "self"}


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class _BaseSequenceModel(TransformerMixin, BaseEstimator):
    """Training and prediction shared by the classifier and the regressor."""

    _parameter_constraints = {
        "hidden_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "num_layers": [Interval(numbers.Integral, 1, None, closed="left")],
        "cell": [StrOptions(set(CELL_KINDS))],
        "bidirectional": ["boolean"],
        "forget_bias": [Interval(numbers.Real, None, None, closed="neither")],
        "cell_clip": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "input_projection": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "readout": [StrOptions(set(READOUTS))],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "scoring": [StrOptions({"loss"}), str, callable, None],
        "learning_rate_schedule": [StrOptions({"constant", "plateau"})],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "clip_grad_norm": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "shuffle": ["boolean"],
        "augment": [callable, None],
        "n_steps": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "layout": [StrOptions({"ntf", "nft"})],
        "dtype": [StrOptions({"float32", "float64"})],
        "backend": [StrOptions({"auto", "cython", "numba", "numpy", "cuda"})],
        "compute_dtype": [None, StrOptions({"float32", "bfloat16"})],
        "n_jobs": [None, Interval(numbers.Integral, -1, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
    }

    def __init__(self, hidden_size=128, num_layers=1, cell="lstm", bidirectional=False,
                 forget_bias=1.0, cell_clip=None, input_projection=None, readout="last",
                 dropout=0.0, optimizer="adam", learning_rate=1e-3, batch_size=128,
                 max_iter=50, tol=1e-4, early_stopping=False, scoring="loss",
                 learning_rate_schedule="constant", validation_fraction=0.1,
                 n_iter_no_change=10, clip_grad_norm=None, alpha=0.0, shuffle=True,
                 augment=None, n_steps=None, layout="ntf", dtype="float32", backend="auto",
                 compute_dtype=None, n_jobs=None, random_state=None, verbose=0,
                 warm_start=False):
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.bidirectional = bidirectional
        self.forget_bias = forget_bias
        self.cell_clip = cell_clip
        self.input_projection = input_projection
        self.readout = readout
        self.dropout = dropout
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.tol = tol
        self.early_stopping = early_stopping
        self.scoring = scoring
        self.learning_rate_schedule = learning_rate_schedule
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.clip_grad_norm = clip_grad_norm
        self.alpha = alpha
        self.shuffle = shuffle
        self.augment = augment
        self.n_steps = n_steps
        self.layout = layout
        self.dtype = dtype
        self.backend = backend
        self.compute_dtype = compute_dtype
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start

    # ---------------------------------------------------------------- input checks
    def _validate_params(self):
        super()._validate_params()
        _refuse_boolean_sizes(self, _SIZE_PARAMETERS)

    def _sequences(self, X, reset):
        seq = to_sequences(X, layout=self.layout, n_steps=self.n_steps, dtype=self.dtype)
        # n_features_in_: features per step; for a 2-D X it is its number of columns,
        # which is what scikit-learn (Pipelines, feature checks) expects of a table.
        n_in = seq.n_columns if seq.kind == "2d" else seq.n_features
        if reset:
            return seq, n_in
        if seq.n_features != self.n_features_per_step_:
            raise ValueError(f"X has {seq.n_features} features per step, but "
                             f"{type(self).__name__} is expecting "
                             f"{self.n_features_per_step_} features per step as input"
                             f"{_layout_hint(X, self.layout, self.n_features_per_step_)}")
        if seq.kind == "2d" and self._fit_kind_ == "2d" and n_in != self.n_features_in_:
            raise ValueError(f"X has {n_in} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input")
        return seq, n_in

    def _check_backend(self):
        if self.n_jobs == 0:
            raise ValueError("n_jobs=0 is not a valid number of threads; use a positive "
                             "number, -1 or None")
        return get_backend(self.backend).name

    def _computing(self, name):
        """Backend ``name`` with this estimator's ``compute_dtype`` products (a
        ``ValueError`` for ``"bfloat16"`` with float64 parameters)."""
        return get_backend(name).computing(check_compute_dtype(self.compute_dtype,
                                                               self.dtype))

    def _threads(self):
        """The kernels' threads for this estimator's work: ``n_jobs`` when given, else
        what the caller's :func:`fastlstm.threads` block or the adaptive default says."""
        return contextlib.nullcontext() if self.n_jobs is None else threads(self.n_jobs)

    def _work_key(self, network, backend, what, seq):
        """What makes one batch of this estimator's work cost what it costs: the thread
        choice of :func:`fastlstm._threads.chosen_threads` is kept per key."""
        return (what, backend.name, backend.compute_dtype, self.batch_size,
                seq.values.shape[1:],
                tuple((name, p.shape, p.dtype.str) for name, p in network.params.items()))

    # -------------------------------------------------------------------- training
    def _new_network(self, n_features, n_outputs, rng):
        return SequenceNetwork(n_features, n_outputs, self.hidden_size, self.num_layers,
                               self.cell, self.bidirectional, self.forget_bias,
                               self.cell_clip, self.input_projection, self.readout,
                               self.dtype, rng)

    def _fit(self, X, y, sample_weight, *, incremental, classes=None, X_val=None,
             y_val=None, callbacks=None):
        self._validate_params()
        backend = self._computing(self._check_backend())     # resolved once per fit
        callbacks = _check_callbacks(callbacks)
        reuse = (incremental or self.warm_start) and hasattr(self, "network_")
        seq, n_in = self._sequences(X, reset=not reuse)
        targets, weights = self._prepare_targets(y, len(seq), sample_weight, reuse, classes)
        # One generator for the life of the model (as scikit-learn's MLP): partial_fit and
        # warm starts go on drawing from it, so each epoch gets a fresh shuffle.
        rng = copy.deepcopy(self._rng_) if reuse else check_random_state(self.random_state)
        n_outputs = self._n_outputs(targets)
        if reuse:
            # Train copies: an error below leaves the fitted model exactly as it was.
            network = copy.deepcopy(self.network_)
            optimizer = copy.deepcopy(self._optimizer_)
        else:
            network = self._new_network(seq.n_features, n_outputs, rng)
            optimizer = OPTIMIZERS[self.optimizer](learning_rate=self.learning_rate)
        optimizer.learning_rate = self.learning_rate

        # The validation data: the caller's (X_val, y_val), else with early stopping a
        # held-out fraction of the training data; None without either.
        train_idx, val = np.arange(len(seq)), None
        if X_val is not None or y_val is not None:
            val = self._given_validation(X_val, y_val, seq.n_features)
        elif self.early_stopping and not incremental:
            train_idx, val_idx = self._validation_split(targets, rng)
            val = (seq, targets, weights, val_idx, np.asarray(y)[val_idx])
        monitor = val is not None and self.early_stopping
        history = {key: [] for key in _HISTORY_KEYS}
        best = {"params": None, "loss": np.inf, "score": -np.inf, "stall": 0, "epoch": 0,
                "plateau": 0}
        epochs = 1 if incremental else self.max_iter
        n_iter = 0
        stopped_by = None
        epoch0 = getattr(self, "n_iter_", 0) if reuse else 0
        # The state after the last completed epoch, taken as the next one starts: a
        # Ctrl-C inside an epoch goes back to it (the first epoch has none to go back to).
        completed = None
        trainer = self._device_trainer(network, optimizer, seq, targets, weights, backend)
        try:
            with self._threads(), blas_threads(1):
                self._print_header(val is not None)
                for epoch in range(epochs):
                    if epoch > 0:
                        completed = (network.copy_params(), copy.deepcopy(optimizer),
                                     copy.deepcopy(rng))
                    t0 = time.perf_counter()
                    lr = optimizer.learning_rate
                    if trainer is None:
                        loss = self._epoch(network, optimizer, seq, targets, weights,
                                           train_idx, rng, backend)
                    else:
                        loss = trainer.epoch(train_idx, rng, optimizer.learning_rate)
                        trainer.download(network, optimizer)
                    self._check_finite_params(network, epoch + 1)
                    v_loss = v_score = np.nan
                    if val is not None:
                        v_loss, v_score = self._validation_score(network, backend, val)
                    # the quantity watched for stopping and the schedule: higher is better
                    watched = v_score if monitor else -loss
                    if watched > best["score"] + self.tol:
                        best.update(score=watched, stall=0, plateau=0, epoch=epoch + 1)
                        if monitor:
                            best["params"] = network.copy_params()
                    else:
                        best["stall"] += 1
                        best["plateau"] += 1
                    best["loss"] = min(best["loss"], loss)
                    seconds = time.perf_counter() - t0
                    record = {"epoch": epoch0 + epoch + 1, "loss": loss, "val_loss": v_loss,
                              "val_score": v_score, "learning_rate": lr, "seconds": seconds}
                    for key in _HISTORY_KEYS:
                        history[key].append(record[key])
                    n_iter += 1                    # the epoch is complete from here on
                    completed = None
                    self._print_epoch(record, val is not None, len(train_idx))
                    if (self.learning_rate_schedule == "plateau"
                            and best["plateau"] >= _PLATEAU_PATIENCE):
                        optimizer.learning_rate /= _PLATEAU_FACTOR
                        best["plateau"] = 0
                    if any(cb(dict(record)) is True for cb in callbacks):
                        stopped_by = "callback"
                        break
                    if not incremental and best["stall"] >= self.n_iter_no_change:
                        stopped_by = "no change"
                        break
                else:
                    if not incremental and epochs == self.max_iter:
                        warnings.warn(f"{type(self).__name__}: the maximum number of epochs "
                                      f"({self.max_iter}) was reached before convergence; "
                                      f"raise max_iter", ConvergenceWarning, stacklevel=3)
        except KeyboardInterrupt:
            if n_iter == 0:
                raise                              # the estimator is left as it was
            if completed is not None:
                params, optimizer, rng = completed
                network.set_params(params)
            kept = (f"the weights of epoch {best['epoch']} (the best validation score)"
                    if best["params"] is not None else
                    f"the weights of epoch {n_iter}, the last completed one")
            warnings.warn(f"{type(self).__name__}.fit interrupted after {n_iter} completed "
                          f"epoch(s): the model keeps {kept}", RuntimeWarning, stacklevel=3)
        if best["params"] is not None:
            network.set_params(best["params"])    # early stopping: restore the best
        # All good: the fitted state, at once.
        self.network_ = network
        self._optimizer_ = optimizer
        self._rng_ = rng
        self.backend_ = backend.name
        self.stopped_by_ = stopped_by
        if not reuse:
            self.n_features_in_ = n_in
            self.n_features_per_step_ = seq.n_features
            self._fit_kind_ = seq.kind
            self.loss_curve_ = []
            self.n_iter_ = 0
            self.history_ = {key: [] for key in _HISTORY_KEYS}
            for name in ("validation_loss_curve_", "validation_scores_",
                         "best_validation_score_"):
                if hasattr(self, name):
                    delattr(self, name)
        self._set_targets_fitted()
        self.loss_curve_ = list(getattr(self, "loss_curve_", [])) + history["loss"]
        self.n_iter_ = getattr(self, "n_iter_", 0) + n_iter
        self.best_loss_ = float(min(self.loss_curve_))
        old = getattr(self, "history_", {key: [] for key in _HISTORY_KEYS})
        self.history_ = {key: list(old[key]) + history[key] for key in _HISTORY_KEYS}
        if val is not None:
            self.validation_loss_curve_ = (list(getattr(self, "validation_loss_curve_", []))
                                           + history["val_loss"])
            self.validation_scores_ = (list(getattr(self, "validation_scores_", []))
                                       + history["val_score"])
            self.best_validation_score_ = float(max(self.validation_scores_))
        return self

    def _device_trainer(self, network, optimizer, seq, targets, weights, backend):
        """The device-resident epochs (fastlstm.backends.cuda_training) for
        ``backend="cuda"`` where the model allows them; None: the host loop."""
        if backend.name != "cuda":
            return None
        from .backends import cuda_training
        if cuda_training.unsupported(self, network) is not None:
            return None
        return cuda_training.DeviceTrainer(self, network, optimizer, seq, targets, weights)

    def _given_validation(self, X_val, y_val, n_features):
        """The caller's validation set, checked as ``predict`` checks its input."""
        if X_val is None or y_val is None:
            raise ValueError("pass both X_val and y_val, or neither")
        v_seq = to_sequences(X_val, layout=self.layout, n_steps=self.n_steps,
                             dtype=self.dtype)
        if v_seq.n_features != n_features:
            raise ValueError(f"X_val has {v_seq.n_features} features per step, X has "
                             f"{n_features}")
        v_targets, v_weights = self._validation_targets(y_val, len(v_seq))
        return (v_seq, v_targets, v_weights, np.arange(len(v_seq)), np.asarray(y_val))

    def _validation_score(self, network, backend, val):
        """Validation loss, and the score ``scoring`` names (higher is better)."""
        v_seq, v_targets, v_weights, idx, y_raw = val
        out = self._forward_all(network, v_seq, idx, backend)
        v_loss = float(self._loss(out, v_targets[idx], v_weights[idx])[0])
        if self.scoring == "loss":
            return v_loss, -v_loss
        if self.scoring is None:
            return v_loss, float(self._score_outputs(out, v_targets[idx]))
        from sklearn.metrics import check_scoring
        view = self._scoring_view(network, backend, v_seq.n_features)
        sequences = [v_seq.values[i, :v_seq.lengths[i]] for i in idx]
        return v_loss, float(check_scoring(view, scoring=self.scoring)(view, sequences,
                                                                        y_raw))

    def _scoring_view(self, network, backend, n_features):
        """A shallow copy of the estimator, fitted with the current weights, for a
        scikit-learn scorer to call ``predict`` / ``predict_proba`` on (ragged lists)."""
        view = copy.copy(self)
        view.layout, view.n_steps = "ntf", None
        view.network_, view.backend_ = network, backend
        view.n_features_in_ = view.n_features_per_step_ = n_features
        view._fit_kind_ = "list"
        view._set_pending_as_fitted()
        return view

    def _check_finite_params(self, network, epoch):
        """Refuse to go on (and so to hand back) parameters that overflowed: the loss is
        checked before each update, never after the last one."""
        for name, arr in network.params.items():
            if not np.isfinite(arr).all():
                raise FloatingPointError(
                    f"the parameter {name!r} became NaN or infinite in epoch {epoch}: "
                    f"lower learning_rate (now {self.learning_rate}) or set "
                    f"clip_grad_norm; the estimator is left as it was before this call")

    def _validation_split(self, targets, rng):
        idx = np.arange(len(targets))
        stratify = targets if self._stratify() else None
        try:
            return train_test_split(idx, test_size=self.validation_fraction,
                                    random_state=rng, stratify=stratify)
        except ValueError:
            return train_test_split(idx, test_size=self.validation_fraction,
                                    random_state=rng)

    def _batches(self, idx, rng, shuffle):
        """Index arrays of the training batches of one epoch."""
        if shuffle:
            idx = idx[rng.permutation(len(idx))]
        for start in range(0, len(idx), self.batch_size):
            yield idx[start:start + self.batch_size]

    def _epoch(self, network, optimizer, seq, targets, weights, idx, rng, backend):
        total, seen = 0.0, 0.0
        progress = self._progress(len(idx))
        key = self._work_key(network, backend, "fit", seq)
        for b in self._batches(idx, rng, self.shuffle):
            with chosen_threads(key):
                loss, wsum = self._step(network, optimizer, seq, targets, weights, b, rng,
                                        backend)
            total += loss * wsum
            seen += wsum
            if progress is not None:
                progress.update(len(b))
        if progress is not None:
            progress.close()
        return total / seen

    def _step(self, network, optimizer, seq, targets, weights, b, rng, backend):
        """One update from the batch ``b``; returns its loss and its weight sum."""
        params = network.params
        wsum = float(weights[b].sum())
        loss, grads = 0.0, None
        # A very ragged batch runs as groups of similar lengths (see _length_groups),
        # their gradients summed: memory follows the steps that exist.
        for g, Xg, Lg in _length_groups(b, seq):
            if self.augment is not None:
                Xg = self._augmented(Xg, Lg, rng)
            out, cache = network.forward(Xg, Lg, backend, self.dropout, rng)
            loss_g, d_out = self._loss(out, targets[g], weights[g], wsum)
            if not np.isfinite(loss_g):
                raise FloatingPointError(
                    f"the training loss became {loss_g}: lower learning_rate (now "
                    f"{self.learning_rate}) or set clip_grad_norm")
            del out
            grads_g = network.backward(cache, d_out)
            del cache
            loss += loss_g
            if grads is None:
                grads = grads_g
            else:
                for name, grad in grads_g.items():
                    grads[name] += grad
        n = len(b)
        if self.alpha:
            for name in network.weight_names():
                loss += 0.5 * self.alpha * float(np.sum(params[name] ** 2)) / n
                grads[name] = grads[name] + (self.alpha / n) * params[name]
        if self.clip_grad_norm is not None:
            norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2))
                               for g in grads.values()))
            if norm > self.clip_grad_norm:
                scale = self.clip_grad_norm / norm
                grads = {k: g * scale for k, g in grads.items()}
        optimizer.step(params, grads)
        return loss, wsum

    def _augmented(self, Xb, Lb, rng):
        """``self.augment`` applied to one training batch, its result checked."""
        out = self.augment(Xb, Lb, rng)
        if not isinstance(out, np.ndarray) or out.shape != Xb.shape:
            raise ValueError(f"augment={self.augment!r} must return an array of the batch's "
                             f"shape {Xb.shape}, got "
                             f"{getattr(out, 'shape', type(out).__name__)}")
        out = np.ascontiguousarray(out, dtype=Xb.dtype)
        if not np.isfinite(out).all():
            raise ValueError(f"augment={self.augment!r} returned NaN or infinity")
        return out

    def _forward_all(self, network, seq, idx, backend, features=False):
        """Outputs (or, with ``features``, the readout features) of the sequences ``idx``,
        in that order, computed in batches of at most ``PREDICT_BATCH`` that keep no
        history (``_length_groups`` splits a very ragged one)."""
        if backend.name == "cuda" and backend.compute_dtype is None:
            from .backends import cuda_training
            if cuda_training.unsupported_model(network) is None:     # on the device
                return cuda_training.outputs(network, seq, idx, _thresholds.PREDICT_BATCH,
                                             features)
        result = None
        key = self._work_key(network, backend, "predict", seq)
        for start in range(0, len(idx), _thresholds.PREDICT_BATCH):
            chunk = np.arange(start, min(start + _thresholds.PREDICT_BATCH, len(idx)))
            for g, Xg, Lg in _length_groups(chunk, seq, idx):
                # a thread choice per size class (powers of two): one thread can win on a
                # few sequences and lose on many, and a choice kept across them was timed
                # again and again (batches of 64 after batches of 1-16: 5.0 ms a call
                # against 2.2-2.8 alone, Zen 4)
                with chosen_threads(key + (len(g).bit_length(),)):
                    out, cache = network.forward(Xg, Lg, backend, keep_cache=False)
                if features:
                    out = cache["features"]
                if result is None:
                    result = np.empty((len(idx), out.shape[1]), out.dtype)
                result[g] = out
        return result

    def _decision(self, X):
        check_is_fitted(self, "network_")
        seq, _ = self._sequences(X, reset=False)
        with self._threads(), blas_threads(1):
            return self._forward_all(self.network_, seq, np.arange(len(seq)),
                                     self._computing(self.backend_))

    def transform(self, X):
        """The readout features (final hidden state(s), or mean / max over steps).

        Returns
        -------
        ndarray (n_samples, hidden_size * (2 if bidirectional else 1))
        """
        check_is_fitted(self, "network_")
        seq, _ = self._sequences(X, reset=False)
        with self._threads(), blas_threads(1):
            return self._forward_all(self.network_, seq, np.arange(len(seq)),
                                     self._computing(self.backend_), features=True)

    # -------------------------------------------------------------- verbose output
    def _print_header(self, with_validation):
        if self.verbose:
            cols = f"{'epoch':>6} {'train loss':>11}"
            if with_validation:
                cols += f" {'val loss':>9} {'val score':>9}"
            self._write(cols + f" {'seconds':>8} {'samples/s':>10}")

    def _print_epoch(self, record, with_validation, n_samples):
        if self.verbose:
            line = f"{record['epoch']:6d} {record['loss']:11.5f}"
            if with_validation:
                line += f" {record['val_loss']:9.5f} {record['val_score']:9.4f}"
            seconds = record["seconds"]
            self._write(line + f" {seconds:8.2f} {n_samples / max(seconds, 1e-9):10.0f}")

    def _write(self, line):
        """A row of the epoch table: through tqdm where a bar is drawn (it clears and
        redraws the bar around the row), else print."""
        tqdm = _tqdm() if self.verbose >= 2 else None
        if tqdm is not None:
            tqdm.write(line, file=sys.stdout)
        else:
            print(line, file=sys.stdout, flush=True)

    def _progress(self, total):
        if self.verbose < 2:
            return None
        tqdm = _tqdm()
        if tqdm is None:
            warnings.warn("verbose=2 draws a progress bar with tqdm, which is not "
                          "installed (pip install tqdm): showing the epoch table only",
                          UserWarning, stacklevel=4)
            return None
        return tqdm(total=total, unit="seq", leave=False, file=sys.stdout)

    # ----------------------------------------------------------------- persistence
    def save(self, file):
        """Store the fitted model in one file: arrays plus JSON, no pickle.

        Parameters
        ----------
        file : str, path-like or writable binary file object

        Every constructor parameter is stored with its type (``class_weight``'s keys, a
        ``RandomState``'s state) together with the optimizer's and the generator's state,
        so ``partial_fit`` after :meth:`load` continues as it would have. A parameter that
        cannot be stored without pickle (a custom ``augment`` callable) raises
        ``ValueError`` before anything is written. The format and what :meth:`load`
        checks are described in :mod:`fastlstm.persistence`.
        """
        check_is_fitted(self, "network_")
        from .persistence import save_model
        save_model(self, file)

    @classmethod
    def load(cls, file):
        """Load a model written by :meth:`save`; safe on files from anyone.

        Parameters
        ----------
        file : str, path-like or seekable binary file object

        Raises
        ------
        FileNotFoundError
            When ``file`` is a path to nothing.
        ValueError
            When ``file`` is not a valid fastlstm model file of this class, naming what
            is wrong. Nothing is unpickled, and every size, shape, dtype and value is
            checked before the network is built (:mod:`fastlstm.persistence`).
        """
        from .persistence import load_model
        return load_model(cls, file)

    def _fitted_meta(self):
        """The fitted attributes stored as JSON (checked on load by
        ``_stored_fitted_checks`` and the common list of :mod:`fastlstm.persistence`)."""
        keys = ("n_features_in_", "n_features_per_step_", "_fit_kind_", "n_iter_",
                "loss_curve_", "best_loss_", "backend_", "validation_loss_curve_",
                "validation_scores_", "best_validation_score_", "history_", "stopped_by_")
        return {k: getattr(self, k) for k in keys if hasattr(self, k)}

    def _fitted_arrays(self):
        return {}

    def _stored_fitted_checks(self, network_config):
        """Checks of the class's own JSON fitted entries: name -> predicate."""
        return {}

    def _restore_fitted_arrays(self, fitted, network_config, archive):
        """The class's own fitted attributes from ``fitted`` and the archive's arrays."""
        return {}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        # transform() returns the network's dtype, whatever X's was.
        tags.transformer_tags.preserves_dtype = [self.dtype]
        return tags


class LSTMClassifier(ClassifierMixin, _BaseSequenceModel):
    """Recurrent sequence classifier (LSTM, peephole LSTM, GRU or RNN) on fastlstm's kernels.

    A dense input projection (optional), ``num_layers`` recurrent layers (optionally
    bidirectional, dropout between them), a readout of each sequence (its last valid
    step, or mean / max over its valid steps) and a dense softmax layer, trained with
    Adam or SGD on the cross-entropy (optionally with smoothed labels).

    Parameters
    ----------
    hidden_size : int, default 128
        Units of each recurrent layer (per direction).
    num_layers : int, default 1
    cell : {"lstm", "peephole", "gru", "rnn"}, default "lstm"
        TF1 ``BasicLSTMCell``, ``LSTMCell(use_peepholes=True)``,
        ``GRUCell(reset_after=True)`` (the GRU of PyTorch and Keras) or ``BasicRNNCell``.
    bidirectional : bool, default False
    forget_bias : float, default 1.0
    cell_clip : float or None, default None
        Cell-state clipping of the LSTM cells.
    input_projection : int or None, default None
        Width of a linear dense layer applied at every step before the first
        recurrent layer (the MNIST row-LSTM uses 128).
    readout : {"last", "mean", "max"}, default "last"
        ``"last"``: the final hidden state (the last *valid* step) of each direction.
    dropout : float in [0, 1), default 0.0
        Dropout between recurrent layers while training.
    optimizer : {"adam", "sgd"}, default "adam"
        ``"sgd"`` uses momentum 0.9.
    learning_rate : float, default 1e-3
    batch_size : int, default 128
    max_iter : int, default 50
        Epochs.
    tol : float, default 1e-4
        Improvement below ``tol`` for ``n_iter_no_change`` epochs stops training (of the
        training loss, or of the validation score with early stopping).
    early_stopping : bool, default False
        Stop when the validation score has not improved by ``tol`` for
        ``n_iter_no_change`` epochs, and keep the best epoch's weights; the validation
        set is ``fit``'s ``X_val, y_val`` or else a held-out ``validation_fraction``
        (stratified).
    scoring : "loss", str, callable or None, default "loss"
        What early stopping watches: ``"loss"`` the validation loss (its negative as
        the score), ``None`` the estimator's ``score`` (accuracy, R²), or any
        scikit-learn scorer (a name such as ``"f1_macro"``, or a callable
        ``scorer(estimator, X, y)``).
    learning_rate_schedule : {"constant", "plateau"}, default "constant"
        ``"plateau"``: divide the learning rate by 5 each time 2 epochs in a row fail to
        improve the watched quantity (the validation score with early stopping, else
        the training loss) by ``tol``, as scikit-learn's MLP ``"adaptive"`` rule.
    validation_fraction : float, default 0.1
    n_iter_no_change : int, default 10
    clip_grad_norm : float or None, default None
        Rescale the gradient when its global L2 norm exceeds this.
    alpha : float, default 0.0
        L2 penalty on the weight matrices.
    label_smoothing : float in [0, 1), default 0.0
        Train on the cross-entropy with targets ``(1 - label_smoothing)`` on the true
        class plus ``label_smoothing / n_classes`` on every class, as
        ``torch.nn.CrossEntropyLoss(label_smoothing=...)`` and Keras's
        ``CategoricalCrossentropy(label_smoothing=...)``; ``loss_curve_`` holds that loss.
    class_weight : dict, "balanced" or None, default None
    shuffle : bool, default True
    augment : callable or None, default None
        A random transformation of every training batch, ``augment(X, lengths, rng)``
        -> array of ``X``'s shape, with ``X`` (batch, steps, features) and the
        estimator's random generator ``rng`` (see :mod:`fastlstm.augmentation`; e.g.
        ``RandomShift(max_steps=2, max_features=2)`` for images read row by row). Never
        applied to validation data or in ``predict``.
    n_steps : int or None, default None
        For a 2-D ``X``: steps per row (each row holds ``n_steps * n_features`` values,
        step by step). Without it a row is one univariate sequence.
    layout : {"ntf", "nft"}, default "ntf"
        Axis order of a 3-D ``X``: (samples, steps, features) or (samples, features,
        steps).
    dtype : {"float32", "float64"}, default "float32"
    backend : {"auto", "cython", "numba", "numpy", "cuda"}, default "auto"
    compute_dtype : {None, "float32", "bfloat16"}, default None
        The products' arithmetic. None: the parameters' ``dtype``. ``"bfloat16"``
        (float32 only; Keras's mixed precision): every product, forward and backward,
        multiplies operands rounded to bfloat16 and sums in float32, while the weights,
        the state, the gate math and the optimizer stay float32. Every cell runs it on
        its own kernels where the CPU has AVX512-BF16, with its GEMMs on AMX tiles where
        it has AMX (``backend="cython"`` or ``"auto"``); elsewhere it is a slow NumPy
        emulation, for checking results.
    n_jobs : int or None, default None
        Threads of the kernels. None: the cores this process may run on, capped by
        OpenMP's limit (``OMP_NUM_THREADS``, threadpoolctl), so that in joblib's workers
        (GridSearchCV(n_jobs=...), which sets that limit) the fits do not oversubscribe
        the cores; -1: all cores.
    random_state : int, RandomState or None
        Initial weights, shuffling, dropout, ``augment`` and the validation split; a
        given value gives bit-identical models for any ``n_jobs``.
    verbose : int, default 0
        1: one table row per epoch; 2: also a progress bar over each epoch's sequences
        (tqdm; a warning says so when it is not installed).
    warm_start : bool, default False

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
        Features per step (for a 2-D ``X``: its number of columns).
    n_features_per_step_ : int
    n_iter_ : int
        Epochs run.
    loss_curve_ : list of float
    validation_loss_curve_, validation_scores_ : list of float
        With ``early_stopping``.
    best_loss_, best_validation_score_ : float
    history_ : dict of lists
        One entry per epoch under ``epoch``, ``loss``, ``val_loss``, ``val_score``
        (NaN without validation), ``learning_rate`` and ``seconds``;
        ``pandas.DataFrame(clf.history_)`` shows it as a table.
    stopped_by_ : {"no change", "callback"} or None
        Why the last fit stopped before ``max_iter`` (None: it did not).
    backend_ : str
        The backend that ran.
    network_ : SequenceNetwork
        The trained weights (``network_.params``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastlstm import LSTMClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.randn(60, 12, 3).astype(np.float32)
    >>> y = (X[:, :6, 0].sum(axis=1) > 0).astype(int)
    >>> clf = LSTMClassifier(hidden_size=16, max_iter=5, random_state=0).fit(X, y)
    >>> clf.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        **_BaseSequenceModel._parameter_constraints,
        "label_smoothing": [Interval(numbers.Real, 0, 1, closed="left")],
        "class_weight": [None, dict, StrOptions({"balanced"})],
    }

    def __init__(self, hidden_size=128, num_layers=1, cell="lstm", bidirectional=False,
                 forget_bias=1.0, cell_clip=None, input_projection=None, readout="last",
                 dropout=0.0, optimizer="adam", learning_rate=1e-3, batch_size=128,
                 max_iter=50, tol=1e-4, early_stopping=False, scoring="loss",
                 learning_rate_schedule="constant", validation_fraction=0.1,
                 n_iter_no_change=10, clip_grad_norm=None, alpha=0.0, label_smoothing=0.0,
                 class_weight=None, shuffle=True, augment=None, n_steps=None, layout="ntf",
                 dtype="float32", backend="auto", compute_dtype=None, n_jobs=None,
                 random_state=None, verbose=0, warm_start=False):
        super().__init__(**_base_arguments(locals()))
        self.label_smoothing = label_smoothing
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None, callbacks=None):
        """Train on sequences ``X`` with labels ``y`` (see the class docstring for ``X``).

        Parameters
        ----------
        X, y : the training sequences and their labels
        sample_weight : array-like (n_samples,), optional
        X_val, y_val : validation sequences and labels, optional
            Scored after every epoch (``validation_loss_curve_``, ``validation_scores_``,
            ``history_``); with ``early_stopping=True`` they decide when to stop and
            which epoch's weights to keep, instead of a held-out ``validation_fraction``
            (scikit-learn's HistGradientBoosting convention).
        callbacks : callable or list of callables, optional
            Called after every epoch with its record (a dict: ``epoch``, ``loss``,
            ``val_loss``, ``val_score``, ``learning_rate``, ``seconds``); a callback that
            returns True stops the fit after that epoch (``stopped_by_ == "callback"``).

        Returns
        -------
        self
        """
        return self._fit(X, y, sample_weight, incremental=False, X_val=X_val, y_val=y_val,
                         callbacks=callbacks)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch over ``(X, y)``; ``classes`` is required on the first call."""
        if not hasattr(self, "classes_") and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit")
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def _prepare_targets(self, y, n, sample_weight, reuse, classes):
        y = _check_y_given(self, y)
        if y.ndim == 2 and y.shape[1] == 1:
            warnings.warn("A column-vector y was passed when a 1d array was expected: "
                          "using y.ravel()", DataConversionWarning, stacklevel=4)
            y = y.ravel()
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D (one label per sequence), got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"X holds {n} sequences but y has {len(y)} labels")
        if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinity")
        if y.dtype.kind == "O":
            y = y.astype(str) if all(isinstance(v, str) for v in y) else y
        from sklearn.utils.multiclass import type_of_target
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Unknown label type: y is {kind!r}; LSTMClassifier needs "
                             f"binary or multiclass labels")
        if reuse:
            encoder = self._label_encoder_
            unseen = np.setdiff1d(y, encoder.classes_)
            if len(unseen):
                raise ValueError(f"y holds labels not seen in the first fit: {unseen[:5]}")
        else:
            encoder = LabelEncoder().fit(classes if classes is not None else y)
            if len(encoder.classes_) < 2:
                raise ValueError(f"y holds only one class ({encoder.classes_[0]!r}): a "
                                 f"classifier needs at least 2 classes")
        targets = encoder.transform(y)
        weights = _sample_weights(sample_weight, n, self.dtype)
        if self.class_weight is not None:
            cw = compute_class_weight(self.class_weight, classes=np.arange(len(encoder.classes_)),
                                      y=targets) if self.class_weight == "balanced" else \
                np.array([self.class_weight.get(c, 1.0) for c in encoder.classes_])
            weights = weights * cw[targets].astype(weights.dtype)
        self._pending_encoder = encoder
        return targets, weights

    def _set_targets_fitted(self):
        self._set_pending_as_fitted()
        del self._pending_encoder

    def _set_pending_as_fitted(self):
        self._label_encoder_ = self._pending_encoder
        self.classes_ = self._label_encoder_.classes_

    def _validation_targets(self, y_val, n):
        y_val = _check_y_given(self, y_val)
        if y_val.ndim != 1 or len(y_val) != n:
            raise ValueError(f"y_val must be 1-D with one label per sequence of X_val "
                             f"({n}), got shape {y_val.shape}")
        if y_val.dtype.kind == "O" and all(isinstance(v, str) for v in y_val):
            y_val = y_val.astype(str)
        unseen = np.setdiff1d(y_val, self._pending_encoder.classes_)
        if len(unseen):
            raise ValueError(f"y_val holds labels not in y: {unseen[:5]}")
        return self._pending_encoder.transform(y_val), np.ones(n, np.float64)

    def _n_outputs(self, targets):
        return len(self._pending_encoder.classes_)

    def _stratify(self):
        return True

    def _loss(self, logits, targets, weights, wsum=None):
        """Weighted mean cross-entropy of the softmax against the (smoothed) targets, and
        its gradient with respect to the logits, p - q per sample; ``wsum``: the weights'
        sum to divide by (the whole batch's, for a group of it), theirs by default."""
        p = _softmax(logits.astype(np.float64))
        n, k = p.shape
        rows = np.arange(n)
        wsum = weights.sum() if wsum is None else wsum
        eps = self.label_smoothing
        log_p = np.log(np.maximum(p, 1e-300))
        # -sum_c q_c log p_c with q = (1 - eps) one_hot + eps / k
        per_sample = -(1 - eps) * log_p[rows, targets]
        if eps > 0:
            per_sample -= eps / k * log_p.sum(axis=1)
        loss = float((weights * per_sample).sum() / wsum)
        d = p
        d[rows, targets] -= 1 - eps
        if eps > 0:
            d -= eps / k
        d *= (weights / wsum)[:, None]
        return loss, d.astype(logits.dtype)

    def _score_outputs(self, logits, targets):
        return float(np.mean(logits.argmax(axis=1) == targets))

    def decision_function(self, X):
        """Logits: (n_samples,) for two classes (positive minus negative), else (n, n_classes)."""
        z = self._decision(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X):
        """Class probabilities (n_samples, n_classes), columns in the order of ``classes_``."""
        return _softmax(self._decision(X).astype(np.float64))

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        z = self._decision(X).astype(np.float64)
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    def predict(self, X):
        """Most probable class of each sequence, as labels of ``classes_``."""
        scores = self._decision(X)          # checks that the model is fitted
        return self.classes_[scores.argmax(axis=1)]

    def _fitted_meta(self):
        meta = super()._fitted_meta()
        meta["classes_kind"] = self.classes_.dtype.kind
        return meta

    def _fitted_arrays(self):
        classes = self.classes_
        if classes.dtype.kind == "O":
            if not all(isinstance(c, str) for c in classes):
                raise ValueError(f"classes_ of dtype object holding "
                                 f"{sorted({type(c).__name__ for c in classes})} cannot be "
                                 f"stored without pickle; fit with y as an array of numbers "
                                 f"or strings")
            classes = classes.astype(str)
        return {"classes_": classes}

    def _stored_fitted_checks(self, network_config):
        return {"classes_kind": lambda v: v in ("b", "i", "u", "f", "U", "O")}

    def _restore_fitted_arrays(self, fitted, network_config, archive):
        from .persistence import ModelFileError
        kind = fitted.pop("classes_kind")
        shape, dtype, _ = archive.headers.get("classes_", (None, None, None))
        n = network_config["n_outputs"]
        if shape != (n,) or dtype.kind != ("U" if kind == "O" else kind):
            raise ModelFileError(f"{archive.label}: classes_ must be an array of {n} labels of "
                                 f"kind {kind!r}, got {shape} {dtype}")
        archive.used.add("classes_")
        classes = archive.read("classes_")
        if kind == "f" and not np.isfinite(classes).all():
            raise ModelFileError(f"{archive.label}: classes_ contains NaN or infinity")
        if not np.all(classes[1:] > classes[:-1]):
            raise ModelFileError(f"{archive.label}: classes_ must be sorted and distinct, as a "
                                 f"fit leaves them")
        if kind == "O":
            classes = classes.astype(object)
        encoder = LabelEncoder()
        encoder.classes_ = classes
        return {"_label_encoder_": encoder, "classes_": classes}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        return tags


def _check_y_given(estimator, y):
    if y is None:
        raise ValueError(f"{type(estimator).__name__} requires y to be passed, but the "
                         f"target y is None")
    return np.asarray(y)


def _sample_weights(sample_weight, n, dtype):
    if sample_weight is None:
        return np.ones(n, np.float64)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("sample_weight must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError("sample_weight sums to zero")
    return w


class LSTMRegressor(RegressorMixin, _BaseSequenceModel):
    """Recurrent sequence regressor: :class:`LSTMClassifier`'s model with a linear output
    trained on the squared error; ``y`` is 1-D or 2-D (several targets).

    The network learns standardized targets, ``(y - y_mean_) / y_scale_`` with the
    mean and standard deviation of the first fit's ``y`` (of the first ``partial_fit``
    call's, for a stream), and ``predict`` returns the original scale: targets far from
    zero or of any magnitude train as well as unit-scale ones. ``loss_curve_`` is the
    squared error on the standardized scale.

    Parameters are those of :class:`LSTMClassifier` without ``label_smoothing`` and
    ``class_weight``, but ``max_iter`` defaults to 200 (scikit-learn's MLPRegressor's).

    Attributes
    ----------
    n_outputs_ : int
    y_mean_, y_scale_ : ndarray (n_outputs,)
        The standardization of the targets (a constant target has scale 1).
    (and the attributes of :class:`LSTMClassifier` but ``classes_``)
    """

    def __init__(self, hidden_size=128, num_layers=1, cell="lstm", bidirectional=False,
                 forget_bias=1.0, cell_clip=None, input_projection=None, readout="last",
                 dropout=0.0, optimizer="adam", learning_rate=1e-3, batch_size=128,
                 max_iter=200, tol=1e-4, early_stopping=False, scoring="loss",
                 learning_rate_schedule="constant", validation_fraction=0.1,
                 n_iter_no_change=10, clip_grad_norm=None, alpha=0.0, shuffle=True,
                 augment=None, n_steps=None, layout="ntf", dtype="float32", backend="auto",
                 compute_dtype=None, n_jobs=None, random_state=None, verbose=0,
                 warm_start=False):
        # max_iter=200 (the classifier's is 50), as scikit-learn's MLPRegressor: its own
        # check_regressors_train needs R^2 > 0.5 on 200 samples, which 50 epochs (100
        # updates) reached only to 0.31-0.36, 200 epochs to 0.76
        super().__init__(**_base_arguments(locals()))

    def fit(self, X, y, sample_weight=None, *, X_val=None, y_val=None, callbacks=None):
        """Train on sequences ``X`` with targets ``y`` (n_samples,) or (n_samples,
        n_targets); ``X_val``, ``y_val`` and ``callbacks`` as in
        :meth:`LSTMClassifier.fit`."""
        return self._fit(X, y, sample_weight, incremental=False, X_val=X_val, y_val=y_val,
                         callbacks=callbacks)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``(X, y)``."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _prepare_targets(self, y, n, sample_weight, reuse, classes):
        y = _check_y_given(self, y)
        if y.dtype == object:
            try:
                y = y.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"Unknown label type: y must hold real numbers ({exc})") \
                    from exc
        if y.dtype.kind not in "biuf":
            raise ValueError(f"y must hold real numbers, got dtype {y.dtype}")
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D, got shape {y.shape}")
        if len(y) != n:
            raise ValueError(f"X holds {n} sequences but y has {len(y)} targets")
        if not np.all(np.isfinite(y)):
            raise ValueError("y contains NaN or infinity")
        with np.errstate(over="ignore"):              # checked right below
            y2 = y.reshape(n, -1).astype(self.dtype)
        if not np.isfinite(y2).all():
            raise ValueError(f"y holds values too large for dtype={self.dtype!r} (largest "
                             f"magnitude {np.abs(y).max():.3g}): rescale y or use "
                             f"dtype='float64'")
        if reuse and y2.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {y2.shape[1]} targets, the model was fitted with "
                             f"{self.n_outputs_}")
        self._pending_y_ndim = y.ndim
        weights = _sample_weights(sample_weight, n, self.dtype)
        if reuse:
            mean, scale = self.y_mean_, self.y_scale_
        else:
            # weighted: a weight of k is a sample repeated k times here too
            y64 = y.reshape(n, -1).astype(np.float64)
            mean = np.average(y64, axis=0, weights=weights)
            scale = np.sqrt(np.average((y64 - mean) ** 2, axis=0, weights=weights))
            scale[~(scale > 0)] = 1.0
        self._pending_y_stats = (mean, scale)
        targets = ((y.reshape(n, -1) - mean) / scale).astype(self.dtype)
        return targets, weights

    def _set_targets_fitted(self):
        self._set_pending_as_fitted()
        del self._pending_y_ndim, self._pending_y_stats

    def _set_pending_as_fitted(self):
        self._y_ndim_ = self._pending_y_ndim
        self.y_mean_, self.y_scale_ = self._pending_y_stats
        self.n_outputs_ = len(self.y_mean_)

    def _validation_targets(self, y_val, n):
        y_val = np.asarray(_check_y_given(self, y_val), dtype=np.float64)
        if y_val.ndim not in (1, 2) or len(y_val) != n:
            raise ValueError(f"y_val must be 1-D or 2-D with one target row per sequence "
                             f"of X_val ({n}), got shape {y_val.shape}")
        if not np.isfinite(y_val).all():
            raise ValueError("y_val contains NaN or infinity")
        mean, scale = self._pending_y_stats
        y2 = y_val.reshape(n, -1)
        if y2.shape[1] != len(mean):
            raise ValueError(f"y_val has {y2.shape[1]} targets, y has {len(mean)}")
        return ((y2 - mean) / scale).astype(self.dtype), np.ones(n, np.float64)

    def _n_outputs(self, targets):
        return targets.shape[1]

    def _stratify(self):
        return False

    def _loss(self, out, targets, weights, wsum=None):
        diff = out.astype(np.float64) - targets
        wsum = weights.sum() if wsum is None else wsum
        loss = float(0.5 * (weights[:, None] * diff ** 2).sum() / wsum)
        return loss, (diff * (weights / wsum)[:, None]).astype(out.dtype)

    def _score_outputs(self, out, targets):
        from sklearn.metrics import r2_score
        return r2_score(targets, out)

    def predict(self, X):
        """Predicted targets, (n_samples,) or (n_samples, n_targets) like the fitted ``y``."""
        out = self._decision(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out.ravel() if self._y_ndim_ == 1 else out

    def _fitted_meta(self):
        meta = super()._fitted_meta()
        meta.update(_y_ndim_=self._y_ndim_, n_outputs_=self.n_outputs_,
                    y_mean_=self.y_mean_.tolist(), y_scale_=self.y_scale_.tolist())
        return meta

    def _stored_fitted_checks(self, network_config):
        n = network_config["n_outputs"]

        def floats(positive):
            return lambda v: (isinstance(v, list) and len(v) == n and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)
                and (x > 0 or not positive) for x in v))
        return {"_y_ndim_": lambda v: v in (1, 2) and not isinstance(v, bool),
                "n_outputs_": lambda v: v == n and not isinstance(v, bool),
                "y_mean_": floats(False), "y_scale_": floats(True)}

    def _restore_fitted_arrays(self, fitted, network_config, archive):
        return {"y_mean_": np.array(fitted["y_mean_"], np.float64),
                "y_scale_": np.array(fitted["y_scale_"], np.float64)}

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class SequenceScaler(TransformerMixin, BaseEstimator):
    """Standardize each feature over all valid steps of all sequences.

    Accepts every input format of :class:`LSTMClassifier` and returns the same format
    (a ragged list stays a list), so ``make_pipeline(SequenceScaler(), LSTMClassifier())``
    works on ragged lists.

    Parameters
    ----------
    n_steps : int or None
        As in :class:`LSTMClassifier`, for 2-D input.
    layout : {"ntf", "nft"}
    with_mean, with_std : bool

    Attributes
    ----------
    mean_, scale_ : ndarray (n_features_per_step,)
    n_features_in_ : int
    """

    _parameter_constraints = {
        "n_steps": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "layout": [StrOptions({"ntf", "nft"})],
        "with_mean": ["boolean"],
        "with_std": ["boolean"],
    }

    def __init__(self, n_steps=None, layout="ntf", with_mean=True, with_std=True):
        self.n_steps = n_steps
        self.layout = layout
        self.with_mean = with_mean
        self.with_std = with_std

    def fit(self, X, y=None):
        """Compute the per-feature mean and standard deviation over valid steps."""
        self._validate_params()
        _refuse_boolean_sizes(self, ("n_steps",))
        seq = to_sequences(X, layout=self.layout, n_steps=self.n_steps, dtype=np.float64)
        valid = np.arange(seq.values.shape[1])[None, :] < seq.lengths[:, None]
        steps = seq.values[valid]                                   # (n_valid, F)
        mean = steps.mean(axis=0) if self.with_mean else np.zeros(seq.n_features)
        std = steps.std(axis=0) if self.with_std else np.ones(seq.n_features)
        std[std == 0] = 1.0
        self.mean_, self.scale_ = mean, std
        self.n_features_in_ = seq.n_columns if seq.kind == "2d" else seq.n_features
        self.n_features_per_step_ = seq.n_features
        return self

    def transform(self, X):
        """Standardized ``X``, in the format it came in (3-D ``nft`` comes back ``nft``)."""
        check_is_fitted(self, "mean_")
        seq = to_sequences(X, layout=self.layout, n_steps=self.n_steps, dtype=np.float64)
        if seq.n_features != self.n_features_per_step_:
            raise ValueError(f"X has {seq.n_features} features per step, but SequenceScaler "
                             f"is expecting {self.n_features_per_step_} features per step")
        if seq.kind == "2d" and seq.n_columns != self.n_features_in_:
            raise ValueError(f"X has {seq.n_columns} features, but SequenceScaler is "
                             f"expecting {self.n_features_in_} features as input")
        valid = (np.arange(seq.values.shape[1])[None, :] < seq.lengths[:, None])[:, :, None]
        values = np.where(valid, (seq.values - self.mean_) / self.scale_, 0.0)
        return from_sequences(Sequences(values, seq.lengths, seq.kind), seq, self.layout)

    def inverse_transform(self, X):
        """Undo :meth:`transform`."""
        check_is_fitted(self, "mean_")
        seq = to_sequences(X, layout=self.layout, n_steps=self.n_steps, dtype=np.float64)
        valid = (np.arange(seq.values.shape[1])[None, :] < seq.lengths[:, None])[:, :, None]
        values = np.where(valid, seq.values * self.scale_ + self.mean_, 0.0)
        return from_sequences(Sequences(values, seq.lengths, seq.kind), seq, self.layout)
