"""Exported models (ONNX in onnxruntime, the torch module) against predict / predict_proba,
for every cell, layer arrangement, readout and input form, with ragged lengths."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from fastlstm import LSTMClassifier, LSTMRegressor, SequenceScaler
from fastlstm._sequences import to_sequences
from _helpers import require

onnx = require("onnx")
ort = require("onnxruntime")
torch = require("torch")
skl2onnx = require("skl2onnx")
from fastlstm import export  # noqa: E402  (registers the skl2onnx converters)

def ragged(n=30, F=3, seed=0):
    rng = np.random.RandomState(seed)
    X = [rng.randn(length, F).astype(np.float32) for length in rng.randint(1, 9, n)]
    return X, rng.randint(0, 3, n)


def padded(X, dtype=np.float32):
    seq = to_sequences(X)
    return seq.values.astype(dtype), seq.lengths


def run_onnx(proto, X, lengths):
    session = ort.InferenceSession(proto.SerializeToString())
    return session.run(None, {"X": X, "sequence_lens": lengths.astype(np.int32)})


def fit_quietly(model, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.fit(X, y)


CELLS = [("rnn", None), ("lstm", None), ("lstm", 0.5), ("peephole", None),
         ("peephole", 0.5), ("gru", None)]
SHAPES = [(1, None, False), (2, 5, True), (1, 5, True), (2, None, False)]


@pytest.mark.parametrize("cell, clip", CELLS)
@pytest.mark.parametrize("readout", ["last", "mean", "max"])
@pytest.mark.parametrize("layers, projection, bidirectional", SHAPES)
def test_onnx_and_torch_give_predict_proba(cell, clip, readout, layers, projection,
                                           bidirectional):
    X, y = ragged()
    clf = fit_quietly(LSTMClassifier(hidden_size=6, cell=cell, cell_clip=clip,
                                     readout=readout, num_layers=layers,
                                     input_projection=projection,
                                     bidirectional=bidirectional, max_iter=2,
                                     random_state=0), X, y)
    values, lengths = padded(X)
    expected = clf.predict_proba(X)
    label, proba = run_onnx(export.to_onnx(clf), values, lengths)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(label, clf.predict(X))
    module = export.to_torch(clf)
    with torch.no_grad():
        got = module(torch.from_numpy(values), torch.from_numpy(lengths)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(module.predict(values, lengths), clf.predict(X))


def test_the_clipped_cell_is_written_out_and_the_others_use_the_operators():
    X, y = ragged()
    ops = {}
    for clip in (None, 0.5):
        clf = fit_quietly(LSTMClassifier(hidden_size=4, cell_clip=clip, max_iter=1,
                                         random_state=0), X, y)
        ops[clip] = {n.op_type for n in export.to_onnx(clf).graph.node}
    assert "LSTM" in ops[None] and "Scan" not in ops[None]
    assert "Scan" in ops[0.5] and "LSTM" not in ops[0.5]


@pytest.mark.parametrize("y_shape", [(30,), (30, 2)])
def test_regressor(y_shape):
    X, _ = ragged()
    y = np.random.RandomState(1).randn(*y_shape)
    reg = fit_quietly(LSTMRegressor(hidden_size=6, max_iter=2, random_state=0), X, y)
    values, lengths = padded(X)
    (out,) = run_onnx(export.to_onnx(reg), values, lengths)
    assert out.shape == (30, 1 if len(y_shape) == 1 else 2)
    np.testing.assert_allclose(out.reshape(reg.predict(X).shape), reg.predict(X), atol=1e-5)
    with torch.no_grad():
        got = export.to_torch(reg)(values, lengths).numpy()
    np.testing.assert_allclose(got, reg.predict(X), atol=1e-6)


def test_scaler_pipelines_layouts_labels_and_float64():
    X, y = ragged()
    values, lengths = padded(X)
    scaler = SequenceScaler().fit(X)
    (out,) = run_onnx(export.to_onnx(scaler), values, lengths)
    np.testing.assert_allclose(out, padded(scaler.transform(X))[0], atol=1e-5)

    pipe = fit_quietly(make_pipeline(SequenceScaler(), LSTMClassifier(
        hidden_size=6, max_iter=2, random_state=0)), X, y)
    label, proba = run_onnx(export.to_onnx(pipe), values, lengths)
    np.testing.assert_allclose(proba, pipe.predict_proba(X), atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(export.to_torch(pipe)(values, lengths).numpy(),
                                   pipe.predict_proba(X), atol=1e-6)

    # scikit-learn steps after the estimator see its transform() features
    tail = fit_quietly(make_pipeline(SequenceScaler(), LSTMClassifier(
        hidden_size=6, max_iter=2, random_state=0), LogisticRegression()), X, y)
    label, proba = run_onnx(export.to_onnx(tail), values, lengths)
    np.testing.assert_allclose(proba, tail.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(label, tail.predict(X))
    with pytest.raises(ValueError, match="to_onnx instead"):
        export.to_torch(tail)

    nft = values.transpose(0, 2, 1)
    clf = fit_quietly(LSTMClassifier(hidden_size=6, layout="nft", max_iter=2,
                                     random_state=0), nft, y)
    full = np.full(len(nft), nft.shape[2])
    np.testing.assert_allclose(run_onnx(export.to_onnx(clf), nft, full)[1],
                               clf.predict_proba(nft), atol=1e-5)

    words = np.array(["no", "maybe", "yes"])[y]
    clf = fit_quietly(LSTMClassifier(hidden_size=6, max_iter=2, random_state=0), X, words)
    label, _ = run_onnx(export.to_onnx(clf), values, lengths)
    np.testing.assert_array_equal(label, clf.predict(X))

    clf = fit_quietly(LSTMClassifier(hidden_size=6, max_iter=2, random_state=0,
                                     dtype="float64", bidirectional=True), X, y)
    proto = export.to_onnx(clf)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    _, proba = run_onnx(proto, padded(X, np.float64)[0], lengths)
    np.testing.assert_allclose(proba, clf.predict_proba(X), rtol=1e-12, atol=1e-12)

    gru = fit_quietly(LSTMClassifier(hidden_size=6, max_iter=2, random_state=0, cell="gru",
                                     dtype="float64", bidirectional=True), X, y)
    _, proba = run_onnx(export.to_onnx(gru), padded(X, np.float64)[0], lengths)
    np.testing.assert_allclose(proba, gru.predict_proba(X), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell, clip, runs_on", [
    ("lstm", None, "LSTM"), ("gru", None, "GRU"), ("rnn", None, "RNN"),
    ("peephole", None, None), ("lstm", 0.5, None)])
def test_torch_module_runs_torch_recurrences_where_torch_has_the_cell(cell, clip, runs_on):
    """Cells torch computes run on its own modules (their weights the module's parameters,
    once); peephole and clipped cells on the step loop. Either way: float64 to 1e-12,
    sequences at full length without lengths, and an empty sequence reads out a zero
    state."""
    X, y = ragged()
    clf = fit_quietly(LSTMClassifier(hidden_size=5, cell=cell, cell_clip=clip, max_iter=2,
                                     bidirectional=True, dtype="float64", random_state=0),
                      X, y)
    module = export.to_torch(clf)
    names = {n for n, _ in module.named_parameters()}
    if runs_on is None:
        assert len(module.recurrences) == 0 and "params.layer0__bw__kernel" in names
    else:
        assert {type(m).__name__ for m in module.recurrences.values()} == {runs_on}
        assert "recurrences.layer0__bw.weight_hh_l0" in names
        assert not any(n.startswith("params.layer0") for n in names)
    values, lengths = padded(X, np.float64)
    with torch.no_grad():
        got = module(torch.from_numpy(values), torch.from_numpy(lengths)).numpy()
        np.testing.assert_allclose(got, clf.predict_proba(X), rtol=0, atol=1e-12)
        full = module(torch.from_numpy(values)).numpy()          # every step of each row
        np.testing.assert_allclose(full, clf.predict_proba(values), rtol=0, atol=1e-12)
        lengths[3] = 0
        empty = module(torch.from_numpy(values), torch.from_numpy(lengths)).numpy()
    bias = clf.network_.params["output/bias"]
    np.testing.assert_allclose(empty[3], np.exp(bias) / np.exp(bias).sum(), atol=1e-12)
    np.testing.assert_allclose(np.delete(empty, 3, 0), np.delete(got, 3, 0), atol=1e-12)


def test_torch_module_refuses_bad_lengths():
    X, y = ragged()
    module = export.to_torch(fit_quietly(LSTMClassifier(hidden_size=4, max_iter=1,
                                                        random_state=0), X, y))
    values, lengths = padded(X)
    with pytest.raises(ValueError, match=r"lengths must be in \[0, 8\].*got 2 to 9"):
        module(torch.from_numpy(values), torch.from_numpy(lengths + 1))
    with pytest.raises(ValueError, match="one step count per sequence of x"):
        module(torch.from_numpy(values), torch.from_numpy(lengths[:-1]))


def test_skl2onnx_converts_fastlstm_models_and_pipelines():
    rng = np.random.RandomState(0)
    X, y = rng.randn(30, 7, 3).astype(np.float32), rng.randint(0, 3, 30)
    pipe = fit_quietly(make_pipeline(SequenceScaler(), LSTMClassifier(
        hidden_size=6, cell="peephole", max_iter=2, random_state=0)), X, y)
    proto = skl2onnx.to_onnx(pipe, X[:1], options={"zipmap": False})
    session = ort.InferenceSession(proto.SerializeToString())
    label, proba = session.run(None, {session.get_inputs()[0].name: X})
    np.testing.assert_allclose(proba, pipe.predict_proba(X), atol=1e-5)
    np.testing.assert_array_equal(label, pipe.predict(X))
    reg = fit_quietly(LSTMRegressor(hidden_size=6, max_iter=2, random_state=0), X,
                      rng.randn(30))
    session = ort.InferenceSession(skl2onnx.to_onnx(reg, X[:1]).SerializeToString())
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: X})[0]
                               .ravel(), reg.predict(X), atol=1e-5)


def test_file_round_trip_fixed_steps_and_size_limit(tmp_path, monkeypatch):
    X, y = ragged()
    clf = fit_quietly(LSTMClassifier(hidden_size=32, max_iter=2, random_state=0), X, y)
    values, lengths = padded(X)
    onnx.save_model(export.to_onnx(clf, n_steps=values.shape[1]), tmp_path / "m.onnx")
    proto = onnx.load_model(tmp_path / "m.onnx")
    assert proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value == values.shape[1]
    session = ort.InferenceSession(str(tmp_path / "m.onnx"))
    proba = session.run(["probabilities"], {"X": values,
                                            "sequence_lens": lengths.astype(np.int32)})[0]
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-5)
    # over ONNX's 2 GB limit (lowered here): to_onnx refuses and names save_onnx, which
    # keeps the weights in an external data file that onnxruntime reads
    monkeypatch.setattr(export, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(ValueError, match=r"exceeds ONNX's 2 GB limit.*save_onnx"):
        export.to_onnx(clf)
    export.save_onnx(clf, tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").stat().st_size > 1000     # the weights, outside
    session = ort.InferenceSession(str(tmp_path / "big.onnx"))
    proba = session.run(["probabilities"], {"X": values,
                                            "sequence_lens": lengths.astype(np.int32)})[0]
    np.testing.assert_allclose(proba, clf.predict_proba(X), atol=1e-5)


def test_bad_requests_are_refused():
    X, y = ragged()
    with pytest.raises(NotFittedError):
        export.to_onnx(LSTMClassifier())
    with pytest.raises(ValueError, match="fastlstm models"):
        export.to_onnx(LogisticRegression().fit(np.zeros((4, 2)), [0, 1, 0, 1]))
    clf = fit_quietly(LSTMClassifier(hidden_size=4, max_iter=1, random_state=0), X, y)
    with pytest.raises(ValueError, match="opset must be 14 or later"):
        export.to_onnx(clf, opset=12)
    assert export.to_onnx(clf, opset=14).opset_import[0].version == 14
