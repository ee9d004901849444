"""The training loop people expect: a given validation set, what early stopping watches,
a learning-rate schedule, callbacks, the epoch record, the progress bar."""

import io
import re
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest
from sklearn.metrics import f1_score

from fastlstm import LSTMClassifier, LSTMRegressor
from fastlstm import estimators
from _helpers import require


def data(n=120, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 8, 3).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


COMMON = dict(hidden_size=8, learning_rate=0.02, batch_size=32, random_state=0)


def test_a_given_validation_set_decides_the_stop_and_the_weights_kept():
    X, y = data()
    Xv, yv = data(60, seed=1)
    clf = quiet(LSTMClassifier(max_iter=40, early_stopping=True, n_iter_no_change=3,
                               **COMMON).fit, X, y, X_val=Xv, y_val=yv)
    assert len(clf.validation_loss_curve_) == clf.n_iter_ < 40
    best = int(np.argmax(clf.validation_scores_)) + 1
    # trained on all of X (nothing held out), so the kept weights are those of a plain
    # fit stopped at the best epoch
    ref = quiet(LSTMClassifier(max_iter=best, **COMMON).fit, X, y)
    for name, arr in ref.network_.params.items():
        np.testing.assert_array_equal(clf.network_.params[name], arr, err_msg=name)


def test_scoring_names_what_is_watched():
    X, y = data()
    Xv, yv = data(60, seed=1)
    by_loss = quiet(LSTMClassifier(max_iter=4, **COMMON).fit, X, y, X_val=Xv, y_val=yv)
    np.testing.assert_array_equal(by_loss.validation_scores_,
                                  -np.asarray(by_loss.validation_loss_curve_))
    accuracy = quiet(LSTMClassifier(max_iter=4, scoring=None, **COMMON).fit, X, y,
                     X_val=Xv, y_val=yv)
    assert accuracy.validation_scores_[-1] == accuracy.score(Xv, yv)
    f1 = quiet(LSTMClassifier(max_iter=4, scoring="f1_macro", **COMMON).fit, X, y,
               X_val=Xv, y_val=yv)
    assert f1.validation_scores_[-1] == f1_score(yv, f1.predict(Xv), average="macro")
    calls = []

    def scorer(estimator, X_, y_):
        calls.append(len(X_))
        return 0.5
    custom = quiet(LSTMClassifier(max_iter=3, scoring=scorer, **COMMON).fit, X, y,
                   X_val=Xv, y_val=yv)
    assert calls == [60, 60, 60] and custom.validation_scores_ == [0.5] * 3
    reg = quiet(LSTMRegressor(max_iter=3, scoring="neg_mean_absolute_error", **COMMON).fit,
                X, X[:, :, 1].sum(axis=1) * 10 + 3, X_val=Xv,
                y_val=Xv[:, :, 1].sum(axis=1) * 10 + 3)
    from sklearn.metrics import mean_absolute_error
    target = Xv[:, :, 1].sum(axis=1) * 10 + 3
    assert np.isclose(reg.validation_scores_[-1], -mean_absolute_error(target,
                                                                        reg.predict(Xv)))


def test_plateau_schedule_divides_the_learning_rate():
    X, y = data()
    # tol so large that no epoch after the first counts as an improvement
    clf = quiet(LSTMClassifier(max_iter=7, tol=1e9, n_iter_no_change=100,
                               learning_rate_schedule="plateau", **COMMON).fit, X, y)
    lr = COMMON["learning_rate"]
    np.testing.assert_allclose(clf.history_["learning_rate"],
                               [lr, lr, lr, lr / 5, lr / 5, lr / 25, lr / 25])
    constant = quiet(LSTMClassifier(max_iter=4, tol=1e9, n_iter_no_change=100,
                                    **COMMON).fit, X, y)
    assert constant.history_["learning_rate"] == [lr] * 4


def test_callbacks_see_each_epoch_and_can_stop_the_fit():
    X, y = data()
    seen = []

    def stop_at_three(record):
        seen.append(record)
        return record["epoch"] == 3
    clf = quiet(LSTMClassifier(max_iter=20, **COMMON).fit, X, y, callbacks=stop_at_three)
    assert clf.n_iter_ == 3 and clf.stopped_by_ == "callback"
    assert set(seen[0]) == {"epoch", "loss", "val_loss", "val_score", "learning_rate",
                            "seconds"}
    assert [r["loss"] for r in seen] == clf.loss_curve_

    def broken(record):
        raise RuntimeError("callback failed")
    fresh = LSTMClassifier(max_iter=3, **COMMON)
    with pytest.raises(RuntimeError, match="callback failed"):
        quiet(fresh.fit, X, y, callbacks=[broken])
    assert not hasattr(fresh, "network_")
    with pytest.raises(ValueError, match="callbacks must be callables"):
        fresh.fit(X, y, callbacks=[1])


def test_history_is_one_table_across_fits():
    pd = require("pandas")
    X, y = data()
    clf = quiet(LSTMClassifier(max_iter=3, warm_start=True, **COMMON).fit, X, y)
    quiet(clf.fit, X, y)
    clf.partial_fit(X, y)
    table = pd.DataFrame(clf.history_)
    assert table["epoch"].tolist() == list(range(1, 8)) == list(range(1, clf.n_iter_ + 1))
    assert table["loss"].tolist() == clf.loss_curve_
    assert table["val_loss"].isna().all()


def test_validation_arguments_are_checked():
    X, y = data()
    Xv, yv = data(20, seed=1)
    with pytest.raises(ValueError, match="both X_val and y_val"):
        LSTMClassifier(**COMMON).fit(X, y, X_val=Xv)
    with pytest.raises(ValueError, match="labels not in y"):
        LSTMClassifier(**COMMON).fit(X, y, X_val=Xv, y_val=yv + 5)
    with pytest.raises(ValueError, match="X_val has 2 features per step"):
        LSTMClassifier(**COMMON).fit(X, y, X_val=Xv[:, :, :2], y_val=yv)


def test_verbose_2_keeps_the_epoch_table_intact_and_says_when_tqdm_is_missing(
        monkeypatch):
    X, y = data()
    require("tqdm")
    out = io.StringIO()
    with redirect_stdout(out):
        quiet(LSTMClassifier(max_iter=3, verbose=2, **COMMON).fit, X, y)
    rows = [line for line in re.split(r"[\r\n]", out.getvalue())
            if re.fullmatch(r"\s+\d+\s+[\d.]+\s+[\d.]+\s+\d+", line)]
    assert len(rows) == 3
    monkeypatch.setattr(estimators, "_tqdm", lambda: None)
    out = io.StringIO()
    with redirect_stdout(out), pytest.warns(UserWarning, match="tqdm, which is not "
                                                               "installed"):
        LSTMClassifier(max_iter=1, verbose=2, **COMMON).fit(X, y)
    assert len(out.getvalue().splitlines()) == 2          # the header and one row
