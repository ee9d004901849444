"""Model files: round trips that keep every type, and files crafted to break ``load``."""

import io
import json
import pickle
import time
import zipfile

import numpy as np
import pytest

from fastlstm import LSTMClassifier, LSTMRegressor, __version__
from fastlstm.augmentation import RandomShift
from fastlstm.persistence import FORMAT_VERSION, SKOPS_TRUSTED_TYPES, ModelFileError
from _helpers import require

FAST = dict(hidden_size=8, max_iter=2, random_state=0)


def data(n=40, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.randn(n, 6, 3).astype(np.float32)
    return X, (X[:, :, 0].sum(axis=1) > 0).astype(int)


@pytest.fixture(scope="module")
def fitted():
    X, y = data()
    with pytest.warns(Warning):
        return LSTMClassifier(**FAST).fit(X, y)


def members(model):
    """The file's arrays (name -> array) and its JSON."""
    buf = io.BytesIO()
    model.save(buf)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays, json.loads(arrays.pop("meta").item())


def write(arrays, meta, **savez):
    buf = io.BytesIO()
    (np.savez_compressed if savez.get("compressed") else np.savez)(
        buf, meta=np.array(json.dumps(meta)), **arrays)
    buf.seek(0)
    return buf


def crafted(model, edit):
    """A file of ``model`` with ``edit(arrays, meta)`` applied."""
    arrays, meta = members(model)
    edit(arrays, meta)
    return write(arrays, meta)


# ------------------------------------------------------------------------ round trips
def test_round_trip_keeps_every_parameter_with_its_type(tmp_path):
    X, y = data()
    clf = LSTMClassifier(hidden_size=np.int64(8), max_iter=2, learning_rate=np.float32(0.01),
                         class_weight={0: 1, 1: 5.0}, augment=RandomShift(1, 1),
                         random_state=np.random.RandomState(3), cell="peephole",
                         cell_clip=2.0, bidirectional=True, input_projection=5)
    with pytest.warns(Warning):
        clf.fit(X, y)
    clf.save(tmp_path / "m.npz")                   # a RandomState used to be a TypeError
    back = LSTMClassifier.load(tmp_path / "m.npz")
    for name, value in clf.get_params().items():
        if name in ("augment", "random_state") or name.startswith("augment__"):
            continue
        loaded = back.get_params()[name]
        assert loaded == value and type(loaded) is type(value), name
    assert back.class_weight == {0: 1, 1: 5.0}
    assert [type(k) for k in back.class_weight] == [int, int]     # not '0', '1'
    assert repr(back.augment) == repr(clf.augment)
    assert back.random_state.get_state()[2] == clf.random_state.get_state()[2]
    np.testing.assert_array_equal(back.random_state.get_state()[1],
                                  clf.random_state.get_state()[1])
    for attr in ("n_iter_", "loss_curve_", "best_loss_", "n_features_in_", "backend_",
                 "history_", "stopped_by_"):
        np.testing.assert_equal(getattr(back, attr), getattr(clf, attr))   # NaN == NaN
    np.testing.assert_array_equal(back.classes_, clf.classes_)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))


def test_training_after_load_continues_bit_for_bit(tmp_path):
    """The optimizer's state and the generator go into the file: partial_fit on the
    loaded model (a refit with its class_weight too) gives the original's bits."""
    X, y = data()
    for make in (lambda: LSTMClassifier(**FAST, class_weight={0: 1, 1: 5}),
                 lambda: LSTMRegressor(**FAST, optimizer="sgd", learning_rate=0.01)):
        model = make()
        target = y if isinstance(model, LSTMClassifier) else X[:, :, 1].sum(axis=1)
        with pytest.warns(Warning):
            model.fit(X, target)
        buf = io.BytesIO()
        model.save(buf)
        buf.seek(0)
        back = type(model).load(buf)
        model.partial_fit(X, target)
        back.partial_fit(X, target)
        for name, arr in model.network_.params.items():
            np.testing.assert_array_equal(back.network_.params[name], arr, err_msg=name)


def test_string_and_object_labels_round_trip(tmp_path):
    X, y = data()
    for labels in (np.array(["no", "yes"])[y], np.array(["no", "yes"], object)[y]):
        with pytest.warns(Warning):
            clf = LSTMClassifier(**FAST).fit(X, labels)
        clf.save(tmp_path / "s.npz")
        back = LSTMClassifier.load(tmp_path / "s.npz")
        assert back.classes_.dtype == clf.classes_.dtype
        np.testing.assert_array_equal(back.predict(X), clf.predict(X))


def test_save_refuses_what_it_cannot_store_before_writing(tmp_path, fitted):
    clf = LSTMClassifier(**FAST, class_weight={0: [1]})
    clf.network_ = fitted.network_          # only the parameter matters here
    with pytest.raises(ValueError, match=r"class_weight\[0\]=\[1\] cannot be stored"):
        from fastlstm.persistence import save_model
        save_model(clf, tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


def test_files_carry_format_and_library_version(fitted):
    _, meta = members(fitted)
    assert meta["format"] == "fastlstm-model"
    assert meta["format_version"] == FORMAT_VERSION
    assert meta["fastlstm_version"] == __version__


# ------------------------------------------------------- what is not a model file at all
def test_files_that_are_not_model_files_get_a_value_error(tmp_path, fitted):
    buf = io.BytesIO()
    fitted.save(buf)
    good = buf.getvalue()
    np.save(tmp_path / "a.npy", np.zeros(3))
    (tmp_path / "p.pkl").write_bytes(pickle.dumps(fitted))
    (tmp_path / "e.npz").write_bytes(b"")
    (tmp_path / "t.npz").write_bytes(good[:len(good) // 2])
    (tmp_path / "r.npz").write_bytes(np.random.RandomState(0).bytes(1000))
    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("readme.txt", "hello")
    for name in ("a.npy", "p.pkl", "e.npz", "t.npz", "r.npz", "z.npz"):
        with pytest.raises(ValueError, match="not a fastlstm model file|not a .npy"):
            LSTMClassifier.load(tmp_path / name)
    np.savez(tmp_path / "n.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="no 'meta' entry"):
        LSTMClassifier.load(tmp_path / "n.npz")
    with pytest.raises(ValueError, match="holds a LSTMClassifier, not a LSTMRegressor"):
        LSTMRegressor.load(io.BytesIO(good))


def test_load_never_unpickles(fitted):
    class Boom:
        ran = False

        def __reduce__(self):
            return (exec, ("import builtins; builtins._fastlstm_boom = 1",))

    arrays, meta = members(fitted)
    arrays["param:output/bias"] = np.array([Boom(), Boom()], dtype=object)
    with pytest.raises(ModelFileError, match="holds Python objects"):
        LSTMClassifier.load(write(arrays, meta))
    import builtins
    assert not hasattr(builtins, "_fastlstm_boom")


def test_compressed_and_lying_headers_are_refused(fitted):
    arrays, meta = members(fitted)
    with pytest.raises(ValueError, match="compressed"):
        LSTMClassifier.load(write(arrays, meta, compressed=True))
    # a header declaring a huge shape over a few bytes of data: refused before reading
    buf = io.BytesIO()
    fitted.save(buf)
    buf.seek(0)
    forged = io.BytesIO()
    with zipfile.ZipFile(buf) as src, zipfile.ZipFile(forged, "w") as dst:
        for info in src.infolist():
            content = src.read(info)
            if info.filename == "param:output/bias.npy":
                head = io.BytesIO()
                np.lib.format.write_array_header_1_0(
                    head, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 9,)})
                content = head.getvalue() + np.zeros(2, np.float32).tobytes()
            dst.writestr(info.filename, content)
    forged.seek(0)
    with pytest.raises(ValueError, match=r"'param:output/bias.npy' declares shape "
                                         r"\(1000000000,\) \(4000000000 bytes\) but holds 8"):
        LSTMClassifier.load(forged)


def test_newer_format_names_both_versions(fitted):
    def newer(arrays, meta):
        meta["format_version"] = FORMAT_VERSION + 1
        meta["fastlstm_version"] = "9.0"
    with pytest.raises(ValueError, match=rf"format version {FORMAT_VERSION + 1}, written by "
                                         rf"fastlstm 9.0.*reads format version "
                                         rf"{FORMAT_VERSION}"):
        LSTMClassifier.load(crafted(fitted, newer))


# ------------------------------------------------------------- crafted configurations
def test_declared_sizes_must_agree_with_the_arrays_before_anything_is_built(fitted):
    """A few-KB file declaring huge sizes fails at once, with no allocation or loop."""
    def huge_hidden(arrays, meta):
        meta["network"]["hidden_size"] = meta["params"]["hidden_size"] = 100000

    def many_layers(arrays, meta):
        meta["network"]["num_layers"] = meta["params"]["num_layers"] = 10 ** 7

    for edit, match in ((huge_hidden, "must have shape"), (many_layers, "num_layers=10000000")):
        t0 = time.perf_counter()
        with pytest.raises(ValueError, match=match):
            LSTMClassifier.load(crafted(fitted, edit))
        assert time.perf_counter() - t0 < 5       # not an allocation of tens of GB


@pytest.mark.parametrize("edit, match", [
    (lambda a, m: a.__setitem__("param:output/bias", np.zeros(1, np.float32)),
     r"'output/bias' must have shape \(2,\)"),
    (lambda a, m: a.__setitem__("param:output/kernel",
                                a["param:output/kernel"].astype(np.int64)),
     "dtype float32"),
    (lambda a, m: a["param:layer0/fw/kernel"].__setitem__((0, 0), np.nan),
     "contains NaN"),
    (lambda a, m: a.pop("param:output/bias"), r"missing \['output/bias'\]"),
    (lambda a, m: a.__setitem__("extra", np.zeros(1)), r"unknown arrays \['extra'\]"),
    (lambda a, m: m["fitted"].__setitem__("network_", 1), r"unknown entries \['network_'\]"),
    (lambda a, m: m["fitted"].__setitem__("backend_", "bogus"), "backend_='bogus'"),
    (lambda a, m: m["fitted"].pop("n_iter_"), r"missing entries \['n_iter_'\]"),
    (lambda a, m: m["fitted"].__setitem__("n_features_per_step_", 5),
     "n_features_per_step_=5"),
    (lambda a, m: m["params"].__setitem__("bogus", 1), r"unknown entries \['bogus'\]"),
    (lambda a, m: m["params"].pop("hidden_size"), r"missing entries \['hidden_size'\]"),
    (lambda a, m: m["params"].__setitem__("learning_rate", "fast"), "learning_rate"),
    (lambda a, m: m["params"].__setitem__("dropout", 0.5), None),
    (lambda a, m: m["params"].__setitem__("readout", "mean"), "disagrees"),
    (lambda a, m: m["params"].__setitem__("class_weight", {"x": 1}), "not a value"),
    (lambda a, m: m.__setitem__("extra", 1), r"unknown entries \['extra'\]"),
    (lambda a, m: m.pop("fitted"), r"missing entries \['fitted'\]"),
    (lambda a, m: m.__setitem__("format", "other"), "not a fastlstm model file"),
    (lambda a, m: a.__setitem__("classes_", np.array([1, 0])), "sorted and distinct"),
    (lambda a, m: a.__setitem__("rng:key", np.zeros(3, np.uint32)), "rng:key"),
    (lambda a, m: a.__setitem__("optimizer:m:bogus", np.zeros(1, np.float32)),
     r"unknown parameters \['bogus'\]"),
    (lambda a, m: a.pop("optimizer:v:output/bias"), "must hold the same parameters"),
    (lambda a, m: m["fitted"]["loss_curve_"].append(1.0), "one loss per epoch"),
    (lambda a, m: m["fitted"].__setitem__("best_validation_score_", 0.5), "go together"),
    (lambda a, m: m["fitted"]["optimizer"].__setitem__("kind", "sgd"), "fitted optimizer"),
    (lambda a, m: m["network"].__setitem__("cell_clip", -1), "cell_clip=-1"),
    (lambda a, m: m["network"].__setitem__("num_layers", True), "positive integer"),
])
def test_crafted_entries_are_refused_by_name(fitted, edit, match):
    f = crafted(fitted, edit)
    if match is None:                    # a change that is valid: loads
        assert LSTMClassifier.load(f).dropout == 0.5
        return
    with pytest.raises(ValueError, match=match):
        LSTMClassifier.load(f)


def test_deeply_nested_json_is_refused(fitted):
    arrays, meta = members(fitted)
    text = json.dumps(meta)
    nested = '{"__dict__": [[0, ' * 100000 + "1" + "]]}" * 100000
    text = text.replace('"class_weight": null', f'"class_weight": {nested}')
    buf = io.BytesIO()
    np.savez(buf, meta=np.array(text), **arrays)
    buf.seek(0)
    with pytest.raises(ValueError, match="not valid JSON|nested too deeply"):
        LSTMClassifier.load(buf)


def test_load_takes_paths_and_file_objects(tmp_path, fitted):
    X, _ = data()
    with open(tmp_path / "m.npz", "wb") as fh:
        fitted.save(fh)
    with open(tmp_path / "m.npz", "rb") as fh:
        np.testing.assert_array_equal(LSTMClassifier.load(fh).predict_proba(X),
                                      fitted.predict_proba(X))
    np.testing.assert_array_equal(LSTMClassifier.load(str(tmp_path / "m.npz")).predict(X),
                                  fitted.predict(X))



def test_missing_paths_raise_file_not_found_naming_them(tmp_path, fitted):
    """As open() and np.load: a path that does not exist is not a malformed file, and a
    save into a missing folder names the folder, not the temporary file."""
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        LSTMClassifier.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="no such folder.*missing"):
        fitted.save(tmp_path / "missing" / "m.npz")
    assert not (tmp_path / "missing").exists()


# ------------------------------------------------------------------ pipelines, skops
def test_a_pipeline_round_trips_through_skops_with_the_shipped_trusted_types(tmp_path):
    sio = require("skops.io")
    from sklearn.pipeline import make_pipeline
    from fastlstm import SequenceScaler
    X, y = data()
    pipe = make_pipeline(SequenceScaler(), LSTMClassifier(**FAST))
    with pytest.warns(Warning):
        pipe.fit(X, y)
    sio.dump(pipe, tmp_path / "p.skops")
    assert set(sio.get_untrusted_types(file=tmp_path / "p.skops")) <= set(SKOPS_TRUSTED_TYPES)
    back = sio.load(tmp_path / "p.skops", trusted=SKOPS_TRUSTED_TYPES)
    np.testing.assert_array_equal(back.predict_proba(X), pipe.predict_proba(X))


def test_damaged_files_give_value_errors_or_working_models(fitted):
    """Random byte flips, and random edits of the JSON and the arrays: load raises
    ValueError or gives a model that predicts; never another exception."""
    X, _ = data()
    buf = io.BytesIO()
    fitted.save(buf)
    good = buf.getvalue()
    rng = np.random.RandomState(0)
    outcomes = {"loaded": 0, "refused": 0}

    def attempt(raw):
        try:
            LSTMClassifier.load(io.BytesIO(raw)).predict_proba(X)
            outcomes["loaded"] += 1
        except ValueError:
            outcomes["refused"] += 1

    for _ in range(300):
        raw = bytearray(good)
        for _ in range(rng.randint(1, 6)):
            raw[rng.randint(len(raw))] = rng.randint(256)
        attempt(bytes(raw))
    arrays, meta = members(fitted)
    replacements = [None, True, 0, -1, 2, 10 ** 12, 1.5, float("nan"), "", "x", [], [1],
                    {}, {"__dict__": [[1, 2]]}, {"__numpy__": "|O", "value": 1}]
    for _ in range(300):
        m = json.loads(json.dumps(meta))
        section = m[["params", "network", "fitted"][rng.randint(3)]]
        key = sorted(section)[rng.randint(len(section))]
        section[key] = replacements[rng.randint(len(replacements))]
        a = dict(arrays)
        name = sorted(a)[rng.randint(len(a))]
        if rng.rand() < 0.5:
            a[name] = [a[name].astype(np.float64), a[name][:1], np.zeros((2,) + a[name].shape,
                                                                        a[name].dtype)][
                rng.randint(3)]
        attempt(write(a, m).getvalue())
    assert outcomes["refused"] > 500
