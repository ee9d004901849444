"""Long tables in, sequences out: one row per (sequence, time step), as sensor and event
data are usually stored, to the list of arrays the estimators take."""

import numpy as np


def from_long_frame(frame, *, id_column, time_column, feature_columns=None):
    """Group a long table into one sequence per id, its rows ordered by time.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per step of a sequence.
    id_column : str
        The column naming the sequence a row belongs to (any hashable values).
    time_column : str
        The column that orders the steps of a sequence (numbers, datetimes, anything
        sortable); its values need not be evenly spaced, but must be distinct within a
        sequence.
    feature_columns : list of str, optional
        The features of a step, in this order; by default every other column.

    Returns
    -------
    sequences : list of ndarray (length_i, n_features), float64
        In the order of first appearance of each id; ready for ``fit`` / ``predict`` (a
        ragged list), ``SequenceScaler`` included.
    ids : ndarray (n_sequences,)
        The id of each sequence, to join labels or predictions back.

    Raises
    ------
    ValueError
        Missing columns, non-numeric or missing (NaN) feature values, missing ids or
        times, or a time repeated within a sequence, naming the first offender.

    Examples
    --------
    >>> import pandas as pd
    >>> from fastlstm.frames import from_long_frame
    >>> frame = pd.DataFrame({"unit": ["a", "a", "b", "a"], "t": [2, 1, 1, 3],
    ...                       "temp": [20.5, 20.0, 18.0, 21.0]})
    >>> sequences, ids = from_long_frame(frame, id_column="unit", time_column="t")
    >>> ids.tolist(), [s.ravel().tolist() for s in sequences]
    (['a', 'b'], [[20.0, 20.5, 21.0], [18.0]])
    """
    if not (hasattr(frame, "columns") and hasattr(frame, "groupby")):
        raise ValueError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    columns = list(frame.columns)
    for name, what in ((id_column, "id_column"), (time_column, "time_column")):
        if name not in columns:
            raise ValueError(f"{what}={name!r} is not a column of the frame "
                             f"(columns: {columns[:20]})")
    if feature_columns is None:
        feature_columns = [c for c in columns if c not in (id_column, time_column)]
    else:
        feature_columns = list(feature_columns)
        missing = [c for c in feature_columns if c not in columns]
        if missing:
            raise ValueError(f"feature_columns {missing} are not columns of the frame")
    if not feature_columns:
        raise ValueError("the frame has no feature columns besides the id and the time")
    if len(frame) == 0:
        raise ValueError("the frame has no rows")
    for name in (id_column, time_column):
        if frame[name].isna().any():
            row = int(np.flatnonzero(frame[name].isna().to_numpy())[0])
            raise ValueError(f"column {name!r} has missing values (first at row {row})")
    values = frame[feature_columns]
    non_numeric = [c for c in feature_columns
                   if not np.issubdtype(np.asarray(values[c]).dtype, np.number)
                   or np.asarray(values[c]).dtype == np.bool_]
    if non_numeric:
        raise ValueError(f"feature columns {non_numeric} are not numeric")
    values = values.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all():
        row, col = np.argwhere(~np.isfinite(values))[0]
        raise ValueError(f"feature {feature_columns[col]!r} is NaN or infinite at row "
                         f"{int(row)}: fill or drop missing values first")
    duplicated = frame.duplicated([id_column, time_column])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise ValueError(f"time {frame[time_column].iloc[row]!r} appears twice for "
                         f"{id_column}={frame[id_column].iloc[row]!r} (row {row}): a "
                         f"sequence needs one row per step")
    # one stable sort by (id's first appearance, time), then cut at the id changes
    import pandas as pd

    codes, ids = pd.factorize(frame[id_column], sort=False)
    ids = np.asarray(ids)
    keys = pd.DataFrame({"code": codes, "time": frame[time_column].to_numpy()})
    order = keys.sort_values(["code", "time"], kind="mergesort").index.to_numpy()
    sorted_codes = codes[order]
    cuts = np.flatnonzero(np.diff(sorted_codes)) + 1
    sequences = [np.ascontiguousarray(part)
                 for part in np.split(values[order], cuts)]
    return sequences, ids

