"""fastlstm on dask: predictions over collections larger than memory, training over the
blocks of arrays larger than memory.

dask-ml's wrappers take 2-D arrays only: ``ParallelPostFit`` and ``Incremental`` run
fastlstm estimators on sequences flattened to ``(n, n_steps * n_features)`` with the
estimator's ``n_steps`` set (see docs/scaling.md). This module takes sequences in their
own forms:

* a 3-D dask array ``(n, steps, features)`` (or ``(n, features, steps)`` for
  ``layout="nft"``), chunked along its first axis;
* a dask bag whose items are sequences ``(length_i, features)`` of any lengths;
* a long-format dask DataFrame (one row per step), each sequence's rows in one partition
  (``ddf.set_index(id_column)`` or ``ddf.shuffle(id_column)`` puts them there).

:func:`predict`, :func:`predict_proba` and :func:`transform` return dask collections:
a dask array for array and bag input, a dask DataFrame indexed by sequence id for frame
input. :func:`partial_fit` trains over the blocks of a 3-D dask array, one task per
block chained through the model, so each block is loaded once per pass by whichever
worker trains on it and the data never needs to fit in one place.

The model travels to the workers by pickle (fastlstm models pickle; for files at rest use
:meth:`~fastlstm.LSTMClassifier.save`). Workers started by a dask Nanny run with
``OMP_NUM_THREADS=1``, which fastlstm's default thread count follows: one kernel thread
per task, so a worker's threads are its parallelism and nothing is oversubscribed.
"""

import numbers

import numpy as np

__all__ = ["partial_fit", "predict", "predict_proba", "transform"]

_METHODS = ("predict", "predict_proba", "transform")


def _dask():
    try:
        import dask
        import dask.array  # noqa: F401  (the array collection)
        import dask.bag  # noqa: F401
    except ImportError as exc:                       # pragma: no cover - the extra
        raise ImportError("fastlstm.dask needs dask: pip install 'fastlstm[dask]'") from exc
    return dask


def _check_method(model, method):
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    if not hasattr(model, method):
        raise ValueError(f"{type(model).__name__} has no {method}()")


def _probe(model, method, item):
    """What ``model.method`` returns for one sequence ``item``: (trailing shape, dtype)."""
    out = np.asarray(getattr(model, method)(item))
    return out.shape[1:], out.dtype


def _one_step(model, layout=None):
    """An all-zero sequence of one step, as a list item for ``model`` (in ``layout``, by
    default the model's): what a probe of a bag or a frame runs on, so that no partition
    is computed before the real graph runs."""
    first = model.steps[0][1] if hasattr(model, "steps") else model
    n_features = getattr(first, "n_features_per_step_", None)
    if n_features is None:
        raise ValueError(f"{type(first).__name__} is not fitted")
    layout = layout or getattr(first, "layout", "ntf")
    return np.zeros((n_features, 1) if layout == "nft" else (1, n_features))


def _apply(model, X, method, id_column, time_column, feature_columns):
    dask = _dask()
    import dask.array as da
    import dask.bag as db

    _check_method(model, method)
    if isinstance(X, da.Array):
        return _apply_array(model, X, method, dask, da)
    if isinstance(X, db.Bag):
        return _apply_bag(model, X, method, dask, da)
    if _is_dask_frame(X):
        if id_column is None or time_column is None:
            raise ValueError("a long-format dask DataFrame needs id_column and time_column")
        return _apply_frame(model, X, method, id_column, time_column, feature_columns)
    raise ValueError(f"X must be a dask array, a dask bag or a dask DataFrame, got "
                     f"{type(X).__name__} (for data in memory call the estimator itself)")


def _is_dask_frame(X):
    try:
        import dask.dataframe as dd
    except ImportError:                              # pragma: no cover - the extra
        return False
    return isinstance(X, dd.DataFrame)


def _apply_array(model, X, method, dask, da):
    if X.ndim != 3:
        raise ValueError(f"X must be a 3-D dask array (n_sequences, ...), got {X.ndim}-D "
                         f"of shape {X.shape}; 2-D arrays of flattened sequences go "
                         f"through dask_ml.wrappers.ParallelPostFit with n_steps set")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError("X has unknown chunk sizes along its first axis: call "
                         "X.compute_chunk_sizes() first")
    if len(X.chunks[1]) > 1 or len(X.chunks[2]) > 1:
        X = X.rechunk({1: -1, 2: -1})                # whole sequences in every block
    rest, dtype = _probe(model, method, np.zeros((1,) + X.shape[1:], X.dtype))
    # one copy of the model in the graph; fresh keys on every call (a result computed
    # before is never taken for this one)
    model_d = dask.delayed(model)
    call = dask.delayed(_call, pure=False)
    # optimize_graph=False: a persisted X's blocks stay references to its data
    blocks = X.to_delayed(optimize_graph=False).ravel()
    parts = [da.from_delayed(call(model_d, method, block), shape=(n,) + rest, dtype=dtype)
             for block, n in zip(blocks, X.chunks[0])]
    if not parts:
        return da.zeros((0,) + rest, dtype=dtype)
    return da.concatenate(parts, axis=0)


def _call(model, method, block):
    """``model.method(block)``, on a worker; an empty block gives an empty result."""
    return getattr(model, method)(block)


def _apply_bag(model, bag, method, dask, da):
    rest, dtype = _probe(model, method, [_one_step(model)])
    model_d = dask.delayed(model)
    call = dask.delayed(_call_sequences, pure=False)
    parts = [da.from_delayed(call(model_d, method, part, rest, dtype),
                             shape=(np.nan,) + rest, dtype=dtype)
             for part in bag.to_delayed()]
    return da.concatenate(parts, axis=0, allow_unknown_chunksizes=True)


def _call_sequences(model, method, items, rest, dtype):
    """``model.method`` over one bag partition (a list of sequences); an empty partition
    gives an empty result of the right trailing shape."""
    items = [np.asarray(item) for item in items]
    if not items:
        return np.empty((0,) + rest, dtype)
    return getattr(model, method)(items)


def _apply_frame(model, frame, method, id_column, time_column, feature_columns):
    import pandas as pd

    index_id = id_column == frame.index.name and id_column not in frame.columns
    # from_long_frame gives (length_i, features) sequences, whatever the model's layout
    rest, dtype = _probe(model, method, [_one_step(model, "ntf")])
    columns = _output_columns(model, method, rest)
    meta = pd.DataFrame({c: pd.Series(dtype=dtype) for c in columns})
    meta.index.name = id_column
    return frame.map_partitions(_call_frame, model, method, id_column, time_column,
                                feature_columns, columns, dtype, index_id, meta=meta)


def _output_columns(model, method, rest):
    """Column names of a result with trailing shape ``rest``: the classes for
    ``predict_proba``, ``method`` or ``method_k`` otherwise."""
    if rest and len(rest) > 1:
        raise ValueError(f"{method} returns sequences here; a DataFrame result needs one "
                         f"row per sequence")
    width = rest[0] if rest else 1
    if method == "predict_proba" and hasattr(model, "classes_"):
        return [str(c) for c in model.classes_]
    if width == 1 and not rest:
        return [method]
    return [f"{method}_{k}" for k in range(width)]


def _call_frame(part, model, method, id_column, time_column, feature_columns, columns,
                dtype, index_id):
    import pandas as pd

    from .frames import from_long_frame

    if index_id:
        part = part.reset_index()
    if part.empty:
        out = pd.DataFrame({c: pd.Series(dtype=dtype) for c in columns})
        out.index.name = id_column
        return out
    seqs, ids = from_long_frame(part, id_column=id_column, time_column=time_column,
                                feature_columns=feature_columns)
    values = np.asarray(getattr(model, method)(seqs))
    out = pd.DataFrame(values.reshape(len(ids), -1), columns=columns,
                       index=pd.Index(ids, name=id_column))
    return out


def predict(model, X, *, id_column=None, time_column=None, feature_columns=None):
    """``model.predict`` over a dask collection of sequences.

    Parameters
    ----------
    model : fitted fastlstm estimator or Pipeline
    X : dask array (n, steps, features), dask bag of sequences, or long-format dask
        DataFrame
        See the module docstring; a frame needs ``id_column`` and ``time_column`` (as in
        :func:`fastlstm.frames.from_long_frame`; the id may be the frame's index).
    id_column, time_column, feature_columns : str, str, list of str, optional
        The long format's columns (DataFrame input only).

    Returns
    -------
    dask array (n,) (or (n, n_outputs) for a multi-output regressor), lazily computed:
    chunks along the first axis as ``X``'s (a bag's: unknown sizes); for a frame, a dask
    DataFrame indexed by sequence id with one column ``"predict"``.
    """
    return _apply(model, X, "predict", id_column, time_column, feature_columns)


def predict_proba(model, X, *, id_column=None, time_column=None, feature_columns=None):
    """``model.predict_proba`` over a dask collection of sequences: a dask array
    (n, n_classes), or for a frame a dask DataFrame with one column per class (named by
    ``str(class)``). See :func:`predict`."""
    return _apply(model, X, "predict_proba", id_column, time_column, feature_columns)


def transform(model, X, *, id_column=None, time_column=None, feature_columns=None):
    """``model.transform`` (the readout features) over a dask collection of sequences: a
    dask array (n, n_features_out), or for a frame a dask DataFrame with columns
    ``transform_0 ...``. See :func:`predict`."""
    return _apply(model, X, "transform", id_column, time_column, feature_columns)


def partial_fit(model, X, y, *, classes=None, sample_weight=None, epochs=1,
                shuffle_blocks=True, random_state=None):
    """Train ``model`` with ``partial_fit`` over the blocks of a dask array, in place.

    One task per block, each taking the model from the one before: a block is loaded
    once per pass, by the worker that trains on it, so neither the data nor a copy of it
    has to fit in one process. On a distributed cluster at most two blocks are in flight
    (the next one loads while the current one trains); the model returns to the caller at
    the end of each pass.

    Parameters
    ----------
    model : LSTMClassifier or LSTMRegressor
    X : dask array (n, steps, features) (or ``layout="nft"``), chunked along its first axis
    y : dask array or array-like (n,) or (n, n_outputs)
        Rechunked to ``X``'s blocks.
    classes : array-like, optional
        Every class of a classifier's first call (scikit-learn's rule). Default: computed
        from ``y`` (one pass over ``y``) when the model has none yet.
    sample_weight : dask array or array-like (n,), optional
    epochs : int, default 1
        Passes over the blocks.
    shuffle_blocks : bool, default True
        Visit the blocks in a new random order each pass.
    random_state : int, RandomState or None
        Seeds the block order.

    Returns
    -------
    model
        The same object, fitted.
    """
    dask = _dask()
    import dask.array as da
    from sklearn.utils import check_random_state

    if not hasattr(model, "partial_fit"):
        raise ValueError(f"{type(model).__name__} has no partial_fit()")
    if not isinstance(X, da.Array) or X.ndim != 3:
        raise ValueError("X must be a 3-D dask array (n_sequences, ...); 2-D arrays of "
                         "flattened sequences go through dask_ml.wrappers.Incremental "
                         "with n_steps set")
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    if any(np.isnan(c) for c in X.chunks[0]):
        raise ValueError("X has unknown chunk sizes: call X.compute_chunk_sizes() first")
    if len(X.chunks[1]) > 1 or len(X.chunks[2]) > 1:
        X = X.rechunk({1: -1, 2: -1})
    y = _aligned(da, y, X, "y")
    weights = None if sample_weight is None else _aligned(da, sample_weight, X,
                                                          "sample_weight")
    kwargs = {}
    if hasattr(model, "predict_proba"):              # a classifier
        if classes is None and not hasattr(model, "classes_"):
            classes = da.unique(y).compute() if y.ndim == 1 else None
        if classes is not None:
            kwargs["classes"] = np.asarray(classes)
    rng = check_random_state(random_state)
    X_blocks = X.to_delayed(optimize_graph=False).ravel()
    y_blocks = y.to_delayed(optimize_graph=False).ravel()
    w_blocks = (None if weights is None
                else weights.to_delayed(optimize_graph=False).ravel())
    step = dask.delayed(_partial_fit_block, pure=False)
    client = _current_client()
    for _ in range(epochs):
        order = rng.permutation(len(X_blocks)) if shuffle_blocks else range(len(X_blocks))

        def steps(current, i, kw):
            return step(current, X_blocks[i], y_blocks[i],
                        None if w_blocks is None else w_blocks[i], kw)

        if client is None:                           # dask's local schedulers
            for i in order:
                fitted = steps(model, i, kwargs).compute()
                kwargs = {}                          # classes: the first call only
                if fitted is not model:              # a process scheduler's copy
                    model.__dict__.update(fitted.__dict__)
            continue
        # On a cluster, one block ahead at most: block i + 1 loads while block i trains.
        # The whole chain at once let the scheduler load every block up front (they do
        # not depend on the model), and a worker limited to 400 MB died on 1.2 GB of data.
        current, pending = model, None
        for i in order:
            current = client.compute(steps(current, i, kwargs))
            kwargs = {}
            if pending is not None:
                pending.result()                     # raises what the step raised
            pending = current
        if pending is not None:
            fitted = pending.result()
            model.__dict__.update(fitted.__dict__)   # the caller's object, fitted
    return model


def _current_client():
    """The distributed Client dask would compute on, or None (no distributed, or no
    Client: dask's local schedulers)."""
    try:
        from distributed import get_client
        return get_client()
    except (ImportError, ValueError):
        return None


def _aligned(da, values, X, name):
    """``values`` (n, ...) as a dask array chunked as ``X`` along the first axis."""
    arr = values if isinstance(values, da.Array) else da.from_array(np.asarray(values))
    if arr.shape[0] != X.shape[0]:
        raise ValueError(f"{name} has {arr.shape[0]} rows but X has {X.shape[0]} sequences")
    return arr.rechunk((X.chunks[0],) + tuple((-1,) * (arr.ndim - 1)))


def _partial_fit_block(model, X, y, sample_weight, kwargs):
    """One ``partial_fit`` call on a worker; returns the model for the next block."""
    if sample_weight is not None:
        kwargs = dict(kwargs, sample_weight=sample_weight)
    return model.partial_fit(X, y, **kwargs)

