"""fastlstm.augmentation and the estimators' ``augment`` parameter."""

import doctest
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils.estimator_checks import parametrize_with_checks

from fastlstm import LSTMClassifier, LSTMRegressor, augmentation
from fastlstm.augmentation import RandomShift

FAST = dict(hidden_size=8, max_iter=3, random_state=0)


def toy(n=48, T=10, F=6, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.rand(n, T, F).astype(np.float32)
    y = (X[:, :, :3].sum(axis=(1, 2)) > X[:, :, 3:].sum(axis=(1, 2))).astype(int)
    return X, y


def shift_by_loops(X, lengths, d_step, d_feat, fill):
    """RandomShift's definition, one element at a time."""
    n, T, F = X.shape
    out = np.full_like(X, fill)
    for i in range(n):
        for t in range(lengths[i]):
            for f in range(F):
                s, g = t - d_step[i], f - d_feat[i]
                if 0 <= s < lengths[i] and 0 <= g < F:
                    out[i, t, f] = X[i, s, g]
    return out


# ------------------------------------------------------------------------ RandomShift
@pytest.mark.parametrize("max_steps, max_features, fill", [(0, 0, 0.0), (2, 0, 0.0),
                                                            (0, 3, -1.0), (2, 2, 0.5),
                                                            (12, 9, 0.0)])
def test_random_shift_is_its_definition(max_steps, max_features, fill):
    """Each sequence moves by the shifts drawn from rng, within its own length; padding
    past the length holds fill_value. The draws are replayed from the same seed."""
    rng = np.random.RandomState(1)
    X = rng.randn(30, 9, 7)
    lengths = rng.randint(1, 10, 30)
    got = RandomShift(max_steps, max_features, fill)(X.copy(), lengths,
                                                     np.random.RandomState(5))
    replay = np.random.RandomState(5)
    d_step = replay.randint(-max_steps, max_steps + 1, size=30)
    d_feat = replay.randint(-max_features, max_features + 1, size=30)
    np.testing.assert_array_equal(got, shift_by_loops(X, lengths, d_step, d_feat, fill))
    assert got.dtype == X.dtype


def test_random_shift_draws_every_shift_and_keeps_float32():
    X = np.zeros((2000, 5, 5), np.float32)
    X[:, 2, 2] = 1.0                                      # one pixel in the middle
    out = RandomShift(2, 1)(X, np.full(2000, 5), np.random.RandomState(0))
    assert out.dtype == np.float32
    where = np.argwhere(out == 1.0)                       # (sample, step, feature)
    assert len(where) == 2000                              # never shifted out
    assert set(map(tuple, where[:, 1:] - 2)) == {(s, f) for s in range(-2, 3)
                                                 for f in range(-1, 2)}


def test_random_shift_validates_its_parameters():
    X = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="max_steps"):
        RandomShift(max_steps=-1)(X, np.array([3, 3]), np.random.RandomState(0))
    with pytest.raises(ValueError, match="max_features"):
        RandomShift(max_features=1.5)(X, np.array([3, 3]), np.random.RandomState(0))


def test_module_docstring_examples_run():
    failed, attempted = doctest.testmod(augmentation)
    assert attempted > 0 and failed == 0


# ------------------------------------------------------------------- the estimators
class Spy:
    """An identity augmenter that records what it was given."""

    def __init__(self):
        self.calls = []

    def __call__(self, X, lengths, rng):
        self.calls.append((X.shape, np.array(lengths)))
        return X


def test_augment_sees_every_training_batch_and_nothing_else():
    X, y = toy()
    spy = Spy()
    clf = LSTMClassifier(**FAST, batch_size=16, augment=spy, early_stopping=True,
                         validation_fraction=0.25, n_iter_no_change=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X, y)
    # 36 training sequences (12 held out, never augmented) in batches of 16: 16, 16, 4
    assert [s[0] for s, _ in spy.calls] == [16, 16, 4] * 3
    assert all(s[1:] == (10, 6) and (L == 10).all() for s, L in spy.calls)
    spy.calls.clear()
    clf.predict(X), clf.predict_proba(X), clf.score(X, y), clf.transform(X)
    assert spy.calls == []


def test_augment_gets_ragged_batches_cut_to_their_longest():
    rng = np.random.RandomState(0)
    seqs = [rng.rand(rng.randint(3, 12), 4) for _ in range(40)]
    y = rng.randint(0, 2, 40)
    spy = Spy()
    LSTMClassifier(**FAST, batch_size=40, augment=spy, shuffle=False).fit(seqs, y)
    (shape, lengths), *_ = spy.calls
    np.testing.assert_array_equal(lengths, [len(s) for s in seqs])
    assert shape == (40, max(map(len, seqs)), 4)


def test_identity_augment_leaves_the_model_bit_for_bit():
    """The hook itself draws nothing and changes nothing: an identity augmenter gives the
    model of augment=None (so augment=None keeps every earlier model's bits)."""
    X, y = toy()
    plain = LSTMClassifier(**FAST).fit(X, y)
    spied = LSTMClassifier(**FAST, augment=Spy()).fit(X, y)
    for k, v in plain.network_.params.items():
        np.testing.assert_array_equal(v, spied.network_.params[k])


def test_random_shift_changes_training_and_is_reproducible_for_any_n_jobs():
    X, y = toy()
    plain = LSTMClassifier(**FAST).fit(X, y)
    runs = [LSTMClassifier(**FAST, augment=RandomShift(1, 1), n_jobs=j).fit(X, y)
            for j in (1, 2, 1)]
    probas = [r.predict_proba(X) for r in runs]
    np.testing.assert_array_equal(probas[0], probas[1])
    np.testing.assert_array_equal(probas[0], probas[2])
    assert not np.array_equal(probas[0], plain.predict_proba(X))


def test_augment_works_for_the_regressor_and_partial_fit():
    X, y = toy()
    reg = LSTMRegressor(**FAST, augment=RandomShift(1, 0)).fit(X, y.astype(float))
    assert np.isfinite(reg.predict(X)).all()
    clf = LSTMClassifier(**FAST, augment=RandomShift(0, 1))
    clf.partial_fit(X, y, classes=[0, 1]).partial_fit(X, y)
    assert clf.n_iter_ == 2


@pytest.mark.parametrize("bad, match", [
    (lambda X, L, r: X[:, :-1], r"shape \(48, 10, 6\), got \(48, 9, 6\)"),
    (lambda X, L, r: X.tolist(), "got list"),
    (lambda X, L, r: X * np.nan, "NaN or infinity"),
])
def test_a_bad_augmenter_is_a_clear_error_and_leaves_the_model_as_it_was(bad, match):
    X, y = toy()
    clf = LSTMClassifier(**FAST).fit(X, y)
    before = clf.predict_proba(X)
    clf.set_params(augment=bad, warm_start=True)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    with pytest.raises(ValueError, match="augment"):
        LSTMClassifier(augment="shift").fit(X, y)


def test_save_load_keeps_random_shift_and_refuses_other_callables(tmp_path):
    X, y = toy()
    clf = LSTMClassifier(**FAST, augment=RandomShift(2, 1, fill_value=0.25)).fit(X, y)
    clf.save(tmp_path / "m.npz")
    back = LSTMClassifier.load(tmp_path / "m.npz")
    assert repr(back.augment) == repr(clf.augment)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))

    # a callable cannot be stored without pickle: refused before anything is written
    other = LSTMClassifier(**FAST, augment=Spy()).fit(X, y)
    with pytest.raises(ValueError, match="augment=.*set_params\\(augment=None\\)"):
        other.save(tmp_path / "o.npz")
    assert list(tmp_path.iterdir()) == [tmp_path / "m.npz"]
    other.set_params(augment=None).save(tmp_path / "o.npz")
    assert LSTMClassifier.load(tmp_path / "o.npz").augment is None


def test_clone_and_grid_search_tune_the_augmenters_parameters():
    X, y = toy()
    clf = LSTMClassifier(**FAST, augment=RandomShift())
    assert clone(clf).augment is not clf.augment
    search = GridSearchCV(clf, {"augment__max_features": [0, 2]}, cv=2).fit(X, y)
    assert [p["augment__max_features"] for p in search.cv_results_["params"]] == [0, 2]
    assert search.best_estimator_.augment.max_features in (0, 2)


@parametrize_with_checks([LSTMClassifier(dtype="float64", hidden_size=8, learning_rate=0.02,
                                         max_iter=100, random_state=0,
                                         augment=RandomShift(0, 0))])
def test_sklearn_compatible_with_an_augmenter(estimator, check):
    """scikit-learn's checks with a nested augmenter (a zero shift: the checks compare
    fits on permuted / weighted data, which a random shift would rightly change)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        check(estimator)
