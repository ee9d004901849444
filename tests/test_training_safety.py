"""Training never hands back a broken model: non-finite parameters, Ctrl-C, edge inputs,
and memory that follows the steps that exist."""

import tracemalloc
import warnings

import numpy as np
import pytest

from fastlstm import LSTMClassifier, LSTMRegressor, SequenceScaler
from fastlstm import _thresholds, _workspace, estimators


def data(n=48, T=6, F=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, T, F).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


# ------------------------------------------------------------ non-finite parameters
@pytest.mark.parametrize("make", [
    lambda: LSTMRegressor(optimizer="sgd", learning_rate=1e39, max_iter=1, random_state=0),
    lambda: LSTMClassifier(optimizer="sgd", learning_rate=1e39, max_iter=1, random_state=0),
])
def test_an_update_that_overflows_is_refused_even_the_last_one(make):
    """One batch, one epoch: the only update is the last, after which no loss is
    computed; the parameters are checked instead."""
    X, y = data()
    model = make()
    target = y if isinstance(model, LSTMClassifier) else X[:, :, 0].sum(axis=1) * 100
    overflowing = model.learning_rate
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError,
                                                  match="became NaN or infinite in epoch 1"):
        model.fit(X, target)
    assert not hasattr(model, "network_")
    # warm: the model it had stays, bit for bit
    model.set_params(learning_rate=1e-3, warm_start=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(X, target)
    before = {k: v.copy() for k, v in model.network_.params.items()}
    model.set_params(learning_rate=overflowing)
    with np.errstate(all="ignore"), pytest.raises(FloatingPointError):
        model.partial_fit(X, target)
    for name, arr in model.network_.params.items():
        np.testing.assert_array_equal(arr, before[name])


# -------------------------------------------------------------------------- Ctrl-C
class InterruptAt:
    """An identity augmenter that raises KeyboardInterrupt at its ``at``-th call (a
    training batch: a real interrupt in the middle of an epoch)."""

    def __init__(self, at=None):
        self.at, self.calls = at, 0

    def __call__(self, X, lengths, rng):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return X


@pytest.mark.parametrize("early_stopping", [False, True])
def test_ctrl_c_mid_epoch_keeps_the_last_completed_or_best_epoch(early_stopping):
    X, y = data(96)
    common = dict(hidden_size=8, batch_size=16, learning_rate=0.02, random_state=0,
                  early_stopping=early_stopping, n_iter_no_change=100)
    batches = 6                # per epoch: 96 (or, 10% held out, 86) in batches of 16
    clf = LSTMClassifier(max_iter=20, augment=InterruptAt(at=4 * batches + 3), **common)
    with pytest.warns(RuntimeWarning, match="interrupted after 4 completed epoch") as rec:
        clf.fit(X, y)
    ref = LSTMClassifier(max_iter=4, augment=InterruptAt(), **common)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref.fit(X, y)
    assert clf.n_iter_ == ref.n_iter_ == 4
    assert clf.loss_curve_ == ref.loss_curve_
    for name, arr in ref.network_.params.items():
        np.testing.assert_array_equal(clf.network_.params[name], arr, err_msg=name)
    message = str(rec[0].message)
    if early_stopping:
        assert clf.validation_scores_ == ref.validation_scores_
        best = 1 + int(np.argmax(ref.validation_scores_))
        assert f"weights of epoch {best} (the best validation score)" in message
    else:
        assert "weights of epoch 4, the last completed one" in message
    # training goes on from there as from the reference
    clf.partial_fit(X, y)
    ref.partial_fit(X, y)
    for name, arr in ref.network_.params.items():
        np.testing.assert_array_equal(clf.network_.params[name], arr, err_msg=name)


def test_ctrl_c_in_the_first_epoch_leaves_the_estimator_as_it_was():
    X, y = data()
    clf = LSTMClassifier(hidden_size=8, batch_size=16, augment=InterruptAt(at=2))
    with pytest.raises(KeyboardInterrupt):
        clf.fit(X, y)
    assert not hasattr(clf, "network_")


# ---------------------------------------------------------------------- edge inputs
@pytest.mark.parametrize("make", [
    lambda: LSTMClassifier(hidden_size=True), lambda: LSTMClassifier(num_layers=True),
    lambda: LSTMClassifier(batch_size=True), lambda: LSTMClassifier(n_steps=True),
    lambda: LSTMRegressor(max_iter=True), lambda: LSTMClassifier(input_projection=True),
])
def test_booleans_are_not_sizes(make):
    X, y = data()
    with pytest.raises(ValueError, match="must be an int, got the boolean True"):
        make().fit(X, y)
    with pytest.raises(ValueError, match="boolean"):
        SequenceScaler(n_steps=True).fit(X)


def test_targets_that_overflow_the_working_dtype_are_refused():
    X, _ = data()
    y = np.full(len(X), 1e39)
    with pytest.raises(ValueError, match=r"y holds values too large for dtype='float32' "
                                         r"\(largest magnitude 1e\+39\)"):
        LSTMRegressor(max_iter=1).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LSTMRegressor(max_iter=1, dtype="float64", hidden_size=4).fit(X, y / 1e30)


# ---------------------------------------------------------- memory of ragged batches
def ragged(long=2000, F=2, seed=0):
    rng = np.random.RandomState(seed)
    X = [rng.randn(20, F).astype(np.float32) for _ in range(31)]
    X.append(rng.randn(long, F).astype(np.float32))
    return X, np.arange(32) % 2


def peak_bytes(fn):
    """Peak of the memory allocated during ``fn()``, from empty buffer pools."""
    _workspace.release_buffers()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_follows_the_steps_that_exist():
    """A training step (and predict) on 31 sequences of 20 steps plus one of 2,000, 128
    units: at most twice the step on the long sequence alone (padded, it was ~16x)."""
    X, y = ragged()
    kw = dict(hidden_size=128, batch_size=32, random_state=0)
    alone = LSTMClassifier(**kw).partial_fit(X[-1:], y[-1:], classes=[0, 1])
    ragged_model = LSTMClassifier(**kw).partial_fit(X, y, classes=[0, 1])
    step_alone = peak_bytes(lambda: alone.partial_fit(X[-1:], y[-1:]))
    step_ragged = peak_bytes(lambda: ragged_model.partial_fit(X, y))
    assert step_ragged <= 2 * step_alone, (step_ragged, step_alone)
    predict_alone = peak_bytes(lambda: alone.predict_proba(X[-1:]))
    predict_ragged = peak_bytes(lambda: ragged_model.predict_proba(X))
    assert predict_ragged <= 2 * predict_alone, (predict_ragged, predict_alone)


def test_length_groups_give_the_padded_batchs_results(monkeypatch):
    """Grouped or padded, a ragged batch's gradient step and predictions agree (float64:
    only the order of sums differs); an equal-length batch is never split."""
    X, y = ragged(long=300)
    kw = dict(hidden_size=6, batch_size=32, optimizer="sgd", learning_rate=0.1,
              dtype="float64", random_state=0, dropout=0.0, num_layers=2,
              bidirectional=True, readout="mean")
    groups = list(estimators._length_groups(np.arange(32), estimators.to_sequences(X)))
    assert [len(g) for g, _, _ in groups] == [1, 31]
    assert list(groups[0][0]) == [31] and [X.shape[1] for _, X, _ in groups] == [300, 20]
    same = list(estimators._length_groups(np.arange(5),
                                          estimators.to_sequences(np.zeros((5, 7, 2)))))
    assert len(same) == 1 and list(same[0][0]) == list(range(5))
    grouped = LSTMClassifier(**kw).partial_fit(X, y, classes=[0, 1])
    p_grouped = grouped.predict_proba(X)
    seen = []
    real = estimators._length_groups
    monkeypatch.setattr(estimators, "_length_groups",
                        lambda *a: seen.append(1) or real(*a))
    monkeypatch.setattr(_thresholds, "MAX_PADDING_FACTOR", np.inf)
    padded = LSTMClassifier(**kw).partial_fit(X, y, classes=[0, 1])
    for name, arr in padded.network_.params.items():
        np.testing.assert_allclose(grouped.network_.params[name], arr, rtol=1e-12,
                                   atol=1e-14, err_msg=name)
    np.testing.assert_allclose(p_grouped, padded.predict_proba(X), rtol=1e-12, atol=1e-14)
    assert seen
