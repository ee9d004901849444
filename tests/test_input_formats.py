"""Sequences as aeon and pandas hold them: layouts of lists and panels, the transposed-shape
warning and hint, long tables; and the regressor's standardized targets."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import r2_score

from fastlstm import LSTMClassifier, LSTMRegressor, SequenceScaler
from fastlstm._sequences import LayoutWarning
from fastlstm.frames import from_long_frame
from _helpers import require

FAST = dict(hidden_size=6, max_iter=2, random_state=0)


def quiet_fit(model, X, y=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


def aeon_unequal(n=24, channels=3, seed=0):
    """aeon's unequal-length collection: a list of (n_channels, n_timepoints_i)."""
    rng = np.random.RandomState(seed)
    X = [rng.randn(channels, rng.randint(5, 20)).astype(np.float32) for _ in range(n)]
    return X, rng.randint(0, 2, n)


def test_nft_takes_aeons_unequal_length_lists():
    X, y = aeon_unequal()
    clf = quiet_fit(LSTMClassifier(layout="nft", **FAST), X, y)
    assert clf.n_features_per_step_ == 3
    same = quiet_fit(LSTMClassifier(**FAST), [x.T for x in X], y)    # (steps, features)
    np.testing.assert_array_equal(clf.predict_proba(X), same.predict_proba([x.T for x in X]))
    scaler = SequenceScaler(layout="nft").fit(X)
    back = scaler.inverse_transform(scaler.transform(X))
    assert [b.shape for b in back] == [x.shape for x in X]
    np.testing.assert_allclose(np.concatenate(back, axis=1), np.concatenate(X, axis=1),
                               atol=1e-5)


def test_an_aeon_list_read_as_ntf_suggests_the_layout():
    X, y = aeon_unequal()
    with pytest.raises(ValueError, match="they agree on their first axis \\(3\\).*"
                                         "layout='nft'"):
        LSTMClassifier(**FAST).fit(X, y)


@pytest.mark.parametrize("shape, layout, warns", [
    ((20, 6, 100), "ntf", True),        # BasicMotions as aeon holds it, read as ntf
    ((20, 100, 6), "nft", True),
    ((20, 28, 28), "ntf", False),       # MNIST rows: square
    ((20, 20, 64), "ntf", False),       # a few steps of wide features: plausible
    ((20, 100, 6), "ntf", False),
    ((20, 6, 100), "nft", False),
])
def test_transposed_looking_panels_warn_naming_layout(shape, layout, warns):
    X = np.random.RandomState(0).randn(*shape).astype(np.float32)
    y = np.arange(shape[0]) % 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LSTMClassifier(layout=layout, **FAST).fit(X, y)
    layout_warnings = [w for w in caught if issubclass(w.category, LayoutWarning)]
    assert bool(layout_warnings) == warns
    if warns:
        assert "layout=" in str(layout_warnings[0].message)
        assert layout_warnings[0].filename == __file__       # points at the caller


def test_feature_mismatch_suggests_the_layout_when_transposing_fits():
    X = np.random.RandomState(0).randn(20, 30, 4).astype(np.float32)
    clf = quiet_fit(LSTMClassifier(**FAST), X, np.arange(20) % 2)
    with pytest.raises(ValueError, match="other axis has 4.*transpose it"):
        clf.predict(X.transpose(0, 2, 1))
    with pytest.raises(ValueError, match="expecting 4 features per step as input$"):
        clf.predict(np.zeros((3, 7, 5), np.float32))
    # a table where sequences were expected: how it is read, and what to pass instead
    for table in (np.zeros((3, 8)), require("pandas").DataFrame(np.zeros((3, 8)))):
        with pytest.raises(ValueError, match=r"expecting 4 features per step as input; a "
                           r"2-D (array|DataFrame) is read as one univariate sequence per "
                           r"row.*fastlstm.from_long_frame"):
            clf.predict(table)


def realistic_frame():
    """Sensor readings of three machines, rows shuffled, times as timestamps."""
    pd = require("pandas")
    rng = np.random.RandomState(0)
    rows = []
    for unit, n in (("pump-7", 5), ("fan-2", 3), ("valve-1", 4)):
        start = pd.Timestamp("2026-01-01 00:00")
        for k in range(n):
            rows.append({"machine": unit, "when": start + pd.Timedelta(minutes=7 * k),
                         "temp": 20 + k + rng.rand(), "rpm": 1000.0 * k, "ok": k % 2})
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=1).reset_index(drop=True)
    return frame


def test_long_frames_become_sequences():
    frame = realistic_frame()
    sequences, ids = from_long_frame(frame, id_column="machine", time_column="when",
                                     feature_columns=["temp", "rpm"])
    assert sorted(ids.tolist()) == ["fan-2", "pump-7", "valve-1"]
    for seq, unit in zip(sequences, ids):
        rows = frame[frame.machine == unit].sort_values("when")
        np.testing.assert_array_equal(seq, rows[["temp", "rpm"]].to_numpy())
    # every other column by default; the result fits as it is
    sequences, ids = from_long_frame(frame, id_column="machine", time_column="when")
    assert sequences[0].shape[1] == 3
    labels = {"pump-7": "worn", "fan-2": "fine", "valve-1": "worn"}
    clf = quiet_fit(LSTMClassifier(**FAST), sequences, [labels[i] for i in ids])
    assert clf.predict(sequences).shape == (3,)


@pytest.mark.parametrize("edit, kwargs, match", [
    (None, dict(id_column="unit", time_column="when"), "id_column='unit' is not a column"),
    (None, dict(id_column="machine", time_column="when", feature_columns=["x"]),
     r"feature_columns \['x'\]"),
    (lambda f: f.assign(temp=f.temp.where(f.index != 2)), {}, "'temp' is NaN .* row 2"),
    (lambda f: f.assign(rpm=f.rpm.astype(str)), {}, r"\['rpm'\] are not numeric"),
    (lambda f: f.assign(when=f.when.iloc[0]), {}, "appears twice"),
    (lambda f: f.assign(machine=f.machine.where(f.index != 0)), {}, "missing values"),
])
def test_long_frames_refuse_what_cannot_be_grouped(edit, kwargs, match):
    frame = realistic_frame()
    if edit is not None:
        frame = edit(frame)
    kwargs = kwargs or dict(id_column="machine", time_column="when")
    with pytest.raises(ValueError, match=match):
        from_long_frame(frame, **kwargs)


def test_regressor_learns_standardized_targets_and_predicts_on_their_scale():
    """A target far from zero and large (sum of a feature, x 1000 + 5e4): R^2 0.987
    held out, as for the unit-scale target (it was -134 on the raw scale)."""
    rng = np.random.RandomState(0)
    X = rng.randn(500, 20, 2).astype(np.float32)
    y = X[:, :, 0].sum(axis=1)
    scores = []
    for target in (y, y * 1000 + 5e4):
        reg = quiet_fit(LSTMRegressor(max_iter=20, random_state=0), X[:400], target[:400])
        scores.append(r2_score(target[400:], reg.predict(X[400:])))
        np.testing.assert_allclose(reg.y_mean_, [target[:400].mean()], rtol=1e-6)
        np.testing.assert_allclose(reg.y_scale_, [target[:400].std()], rtol=1e-6)
    assert min(scores) > 0.9, scores
    # partial_fit keeps the first call's standardization
    reg = LSTMRegressor(hidden_size=4, random_state=0).partial_fit(X[:50], y[:50] + 7)
    first = reg.y_mean_.copy()
    reg.partial_fit(X[50:100], y[50:100] - 7)
    np.testing.assert_array_equal(reg.y_mean_, first)


def test_regressor_defaults_pass_scikit_learns_training_check():
    """check_regressors_train: R^2 > 0.5 on its data with default parameters (0.31 with
    raw targets and 50 epochs)."""
    from sklearn.utils.estimator_checks import check_regressors_train
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_regressors_train("LSTMRegressor", LSTMRegressor(random_state=0))
