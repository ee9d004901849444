"""fastlstm on a real dask LocalCluster (two worker processes of one thread each): every
path of docs/scaling.md agrees with the in-process result, bit for bit where the
computation is the same."""

import warnings

import numpy as np
import pytest

import fastlstm as fl
from _helpers import require

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def client():
    require("dask")
    distributed = require("distributed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
    with cluster, distributed.Client(cluster) as c:
        yield c


def data(n=60, T=7, F=3, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, T, F).astype(np.float32)
    y = (X[:, :, 0].sum(axis=1) > 0).astype(int)
    return X, y


def ragged(n=25, F=3, seed=1):
    rng = np.random.RandomState(seed)
    return [rng.randn(rng.randint(2, 9), F) for _ in range(n)]


@pytest.fixture(scope="module")
def clf():
    X, y = data()
    return fl.LSTMClassifier(hidden_size=8, max_iter=3, random_state=0).fit(X, y)


@pytest.mark.parametrize("chunks", [(16, 7, 3), (25, 3, 2)], ids=["rows", "any"])
def test_array_predictions_equal_the_in_process_ones(client, clf, chunks):
    da = require("dask.array")
    from fastlstm import dask as fld
    X, _ = data()
    Xd = da.from_array(X, chunks=chunks)             # other axes: rechunked whole
    proba = fld.predict_proba(clf, Xd)
    assert proba.shape == (60, 2) and proba.chunks[0] == Xd.chunks[0]
    np.testing.assert_array_equal(proba.compute(), clf.predict_proba(X))
    label = fld.predict(clf, Xd)
    assert label.dtype == clf.classes_.dtype and label.shape == (60,)
    np.testing.assert_array_equal(label.compute(), clf.predict(X))
    np.testing.assert_array_equal(fld.transform(clf, Xd).compute(), clf.transform(X))


def test_a_pipeline_and_the_nft_layout_on_a_dask_array(client):
    da = require("dask.array")
    from sklearn.pipeline import make_pipeline
    from fastlstm import dask as fld
    X, y = data()
    Xn = np.ascontiguousarray(X.transpose(0, 2, 1))          # (n, features, steps)
    pipe = make_pipeline(fl.SequenceScaler(layout="nft"),
                         fl.LSTMRegressor(hidden_size=5, max_iter=2, random_state=0,
                                          layout="nft"))
    pipe.fit(Xn, y.astype(float))
    got = fld.predict(pipe, da.from_array(Xn, chunks=(20, 3, 7))).compute()
    np.testing.assert_array_equal(got, pipe.predict(Xn))


def test_a_bag_of_ragged_sequences(client, clf):
    db = require("dask.bag")
    from fastlstm import dask as fld
    seqs = ragged()
    bag = db.from_sequence(seqs, npartitions=4)
    proba = fld.predict_proba(clf, bag)
    assert np.isnan(proba.shape[0]) and proba.shape[1] == 2
    np.testing.assert_array_equal(proba.compute(), clf.predict_proba(seqs))
    np.testing.assert_array_equal(fld.predict(clf, bag).compute(), clf.predict(seqs))


@pytest.mark.parametrize("id_in_index", [True, False])
def test_a_long_format_dask_dataframe(client, clf, id_in_index):
    pd = require("pandas")
    dd = require("dask.dataframe")
    from fastlstm import dask as fld
    seqs = ragged()
    rows = [dict(id=f"s{i:02d}", t=t, a=s[t, 0], b=s[t, 1], c=s[t, 2])
            for i, s in enumerate(seqs) for t in range(len(s))[::-1]]   # times unsorted
    frame = dd.from_pandas(pd.DataFrame(rows), npartitions=3)
    frame = frame.set_index("id") if id_in_index else frame.shuffle("id")
    proba = fld.predict_proba(clf, frame, id_column="id", time_column="t")
    assert list(proba.columns) == ["0", "1"]
    got = proba.compute().sort_index()
    assert list(got.index) == [f"s{i:02d}" for i in range(len(seqs))]
    np.testing.assert_array_equal(got.to_numpy(), clf.predict_proba(seqs))
    labels = fld.predict(clf, frame, id_column="id", time_column="t").compute().sort_index()
    np.testing.assert_array_equal(labels["predict"].to_numpy(), clf.predict(seqs))


def test_out_of_core_partial_fit_is_bit_identical_to_in_process_calls(client):
    da = require("dask.array")
    from fastlstm import dask as fld
    X, y = data()
    Xd = da.from_array(X, chunks=(16, 7, 3))
    on_cluster = fld.partial_fit(fl.LSTMClassifier(hidden_size=8, random_state=0), Xd, y,
                                 epochs=2, shuffle_blocks=False)
    local = fl.LSTMClassifier(hidden_size=8, random_state=0)
    for _ in range(2):
        for s in range(0, 60, 16):
            local.partial_fit(X[s:s + 16], y[s:s + 16], classes=[0, 1])
    np.testing.assert_array_equal(on_cluster.classes_, [0, 1])
    assert on_cluster.n_iter_ == local.n_iter_ == 8
    np.testing.assert_array_equal(on_cluster.predict_proba(X), local.predict_proba(X))
    for name, value in local.network_.params.items():
        np.testing.assert_array_equal(on_cluster.network_.params[name], value, err_msg=name)


def test_partial_fit_shuffles_blocks_takes_weights_and_fits_regressors(client):
    da = require("dask.array")
    from fastlstm import dask as fld
    X, y = data()
    Xd = da.from_array(X, chunks=(20, 7, 3))
    w = np.linspace(0.5, 1.5, 60)
    a = fld.partial_fit(fl.LSTMRegressor(hidden_size=4, random_state=0), Xd,
                        da.from_array(y.astype(float), chunks=30), sample_weight=w,
                        random_state=3)
    b = fld.partial_fit(fl.LSTMRegressor(hidden_size=4, random_state=0), Xd, y.astype(float),
                        sample_weight=w, random_state=3)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))     # same block order
    local = fl.LSTMRegressor(hidden_size=4, random_state=0)
    for k in np.random.RandomState(3).permutation(3):
        rows = slice(20 * k, 20 * k + 20)
        local.partial_fit(X[rows], y[rows].astype(float), sample_weight=w[rows])
    np.testing.assert_array_equal(a.predict(X), local.predict(X))


def test_bad_calls_say_what_is_wrong(client, clf):
    da = require("dask.array")
    from fastlstm import dask as fld
    X, y = data()
    with pytest.raises(ValueError, match="3-D dask array"):
        fld.predict(clf, da.from_array(X.reshape(60, -1)))
    with pytest.raises(ValueError, match="dask array, a dask bag or a dask DataFrame"):
        fld.predict(clf, X)
    with pytest.raises(ValueError, match="method must be one of"):
        from fastlstm.dask import _apply
        _apply(clf, da.from_array(X), "score", None, None, None)
    with pytest.raises(ValueError, match="y has 59 rows"):
        fld.partial_fit(fl.LSTMClassifier(), da.from_array(X), y[:-1])
    with pytest.raises(ValueError, match="epochs must be a positive integer"):
        fld.partial_fit(fl.LSTMClassifier(), da.from_array(X), y, epochs=0)
    with pytest.raises(ValueError, match="Incremental"):
        fld.partial_fit(fl.LSTMClassifier(), da.from_array(X.reshape(60, -1)), y)


def test_dask_ml_wrappers_take_flattened_sequences_with_n_steps(client):
    """dask-ml's wrappers are 2-D only (a 3-D array fails inside them): with n_steps the
    estimators read each row as steps x features, so ParallelPostFit and Incremental
    work on (n, steps * features)."""
    da = require("dask.array")
    wrappers = require("dask_ml.wrappers")
    X, y = data()
    flat = X.reshape(60, -1)
    clf = fl.LSTMClassifier(hidden_size=8, max_iter=2, n_steps=7, random_state=0)
    post = wrappers.ParallelPostFit(clf).fit(flat, y)
    got = post.predict_proba(da.from_array(flat, chunks=(16, 21))).compute()
    np.testing.assert_array_equal(got, clf.fit(flat, y).predict_proba(flat))
    inc = wrappers.Incremental(fl.LSTMClassifier(hidden_size=8, n_steps=7, random_state=0),
                               shuffle_blocks=False)
    inc.fit(da.from_array(flat, chunks=(16, 21)), da.from_array(y, chunks=16),
            classes=[0, 1])
    local = fl.LSTMClassifier(hidden_size=8, n_steps=7, random_state=0)
    for s in range(0, 60, 16):
        local.partial_fit(flat[s:s + 16], y[s:s + 16], classes=[0, 1])
    np.testing.assert_array_equal(inc.predict_proba(flat), local.predict_proba(flat))


def test_grid_search_on_the_dask_joblib_backend_equals_the_local_one(client):
    joblib = require("joblib")
    from sklearn.model_selection import GridSearchCV
    X, y = data()
    grid = {"hidden_size": [4, 8], "learning_rate": [0.01, 0.03]}
    est = fl.LSTMClassifier(max_iter=2, random_state=0)
    local = GridSearchCV(est, grid, cv=2).fit(X, y)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(est, grid, cv=2, n_jobs=-1).fit(X, y)
    np.testing.assert_array_equal(remote.cv_results_["mean_test_score"],
                                  local.cv_results_["mean_test_score"])
    assert remote.best_params_ == local.best_params_
    np.testing.assert_array_equal(remote.predict_proba(X), local.predict_proba(X))


def test_hyperband_drives_partial_fit_on_the_cluster(client):
    da = require("dask.array")
    model_selection = require("dask_ml.model_selection")
    X, y = data(n=120)
    flat = da.from_array(X.reshape(120, -1), chunks=(30, 21))
    search = model_selection.HyperbandSearchCV(
        fl.LSTMClassifier(hidden_size=6, n_steps=7, random_state=0),
        {"learning_rate": [0.003, 0.01, 0.03], "hidden_size": [4, 8]}, max_iter=3,
        random_state=0)
    search.fit(flat, da.from_array(y, chunks=30), classes=[0, 1])
    assert search.best_params_["learning_rate"] in (0.003, 0.01, 0.03)
    assert search.best_estimator_.n_iter_ >= 1
    assert search.score(X.reshape(120, -1), y) > 0.5


def test_workers_run_the_kernels_on_the_one_thread_they_have(client):
    threads = client.run(lambda: (fl.get_num_threads(), __import__("os").environ.get(
        "OMP_NUM_THREADS")))
    assert len(threads) == 2
    assert all(t == (1, "1") for t in threads.values()), threads
