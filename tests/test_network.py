"""The estimators' network: float64 gradient check of every parameter, every option."""

import numpy as np
import pytest

from fastlstm.network import SequenceNetwork
from _helpers import numeric_gradient

EPS = 1e-6


@pytest.mark.parametrize("cell, layers, bidirectional, projection, readout", [
    ("lstm", 1, False, None, "last"),
    ("lstm", 2, True, 4, "last"),
    ("peephole", 2, False, None, "mean"),
    ("rnn", 1, True, 3, "max"),
    ("lstm", 1, True, None, "mean"),
    ("peephole", 1, True, 1, "last"),     # projection to 1 < 3 features: not folded
    ("gru", 2, True, 4, "last"),
    ("gru", 1, False, None, "max"),
])
def test_network_gradients_match_central_differences(cell, layers, bidirectional, projection,
                                                     readout):
    rng = np.random.RandomState(0)
    net = SequenceNetwork(3, 2, 4, layers, cell, bidirectional, 1.0, None, projection,
                          readout, np.float64, rng)
    for arr in net.params.values():           # non-zero biases exercise every path
        arr += 0.3 * rng.standard_normal(arr.shape)
    X = rng.standard_normal((4, 5, 3))
    lengths = np.array([5, 1, 3, 4])
    X[np.arange(5)[None, :] >= lengths[:, None]] = 0
    R = rng.standard_normal((4, 2))

    def loss():
        return float(np.sum(net.forward(X, lengths, backend="numpy")[0] * R))

    _, cache = net.forward(X, lengths, backend="numpy")
    grads = net.backward(cache, R)
    assert set(grads) == set(net.params)
    for name, arr in net.params.items():
        numeric = numeric_gradient(loss, arr, EPS)
        np.testing.assert_allclose(grads[name], numeric, rtol=1e-6, atol=1e-8, err_msg=name)


def test_dropout_gradients_use_the_same_mask():
    rng = np.random.RandomState(1)
    net = SequenceNetwork(2, 2, 3, 2, "lstm", False, 1.0, None, None, "last", np.float64, rng)
    X = rng.standard_normal((3, 4, 2))
    lengths = np.array([4, 2, 3])
    R = rng.standard_normal((3, 2))
    _, cache = net.forward(X, lengths, "numpy", dropout=0.5, rng=np.random.RandomState(5))
    grads = net.backward(cache, R)
    name = "layer0/fw/kernel"
    arr = net.params[name]
    saved = arr[0, 0]
    vals = []
    for v in (saved + EPS, saved - EPS):
        arr[0, 0] = v
        vals.append(float(np.sum(net.forward(X, lengths, "numpy", dropout=0.5,
                                             rng=np.random.RandomState(5))[0] * R)))
    arr[0, 0] = saved
    np.testing.assert_allclose(grads[name][0, 0], (vals[0] - vals[1]) / (2 * EPS), rtol=1e-6)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_folded_input_projection_equals_projecting_first(bidirectional, monkeypatch):
    """The projection folded into the first layer (W_in W_x) gives the outputs and every
    gradient of projecting first, to float64 rounding; the folding is taken where it
    saves work (here F=3, P=4, G=16: 48 <= 12 + 64)."""
    rng = np.random.RandomState(3)
    net = SequenceNetwork(3, 2, 4, 2, "lstm", bidirectional, 1.0, None, 4, "last",
                          np.float64, rng)
    for arr in net.params.values():
        arr += 0.3 * rng.standard_normal(arr.shape)
    X = rng.standard_normal((5, 6, 3))
    lengths = np.array([6, 2, 5, 1, 6])
    R = rng.standard_normal((5, 2))
    assert net._folds_projection()
    out, cache = net.forward(X, lengths, backend="cython")
    assert cache["folded"]
    grads = net.backward(cache, R)
    monkeypatch.setattr(SequenceNetwork, "_folds_projection", lambda self: False)
    out2, cache2 = net.forward(X, lengths, backend="cython")
    assert not cache2["folded"]
    grads2 = net.backward(cache2, R)
    np.testing.assert_allclose(out, out2, rtol=1e-12, atol=1e-13)
    assert set(grads) == set(grads2) == set(net.params)
    for name in grads:
        np.testing.assert_allclose(grads[name], grads2[name], rtol=1e-11, atol=1e-13,
                                   err_msg=name)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_predictions_in_reused_buffers_equal_the_training_forward(cell):
    """Prediction (keep_cache=False) writes its inputs' copy and the last layer's outputs
    to reused buffers: consecutive calls with other shapes get their own right answers,
    equal to the training forward's bit for bit."""
    rng = np.random.RandomState(1)
    net = SequenceNetwork(3, 2, 16, 2, cell, False, 1.0, None, 8, "last", np.float32, rng)
    batches = [(rng.standard_normal((n, T, 3)).astype(np.float32),
                rng.randint(1, T + 1, n).astype(np.int64)) for n, T in ((9, 6), (4, 11), (9, 6))]
    predicted = [net.forward(X, L, "cython", keep_cache=False)[0].copy() for X, L in batches]
    for (X, L), got in zip(batches, predicted):
        want, _ = net.forward(X, L, "cython", keep_cache=True)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("compiled_compare", [True, False])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_predictions_reuse_the_folded_projection_only_while_its_sources_are_unchanged(
        bidirectional, compiled_compare, monkeypatch):
    """Predictions keep the folded W_in W_x and bias between calls, and fold again when
    any of the four arrays it came from changed in place (a fit, set_params), by a
    single bit: every prediction equals the training forward's of the same weights.
    Compared with the compiled memcmp and with NumPy's (the build without it)."""
    import pickle
    from fastlstm import network
    if compiled_compare:
        assert network._same_bytes is not None        # the compiled build is tested
    else:
        monkeypatch.setattr(network, "_same_bytes", None)
    rng = np.random.RandomState(2)
    net = SequenceNetwork(3, 2, 16, 1, "lstm", bidirectional, 1.0, None, 8, "last",
                          np.float32, rng)
    assert net._folds_projection()
    X = rng.standard_normal((5, 6, 3)).astype(np.float32)
    L = np.array([6, 2, 5, 1, 6])

    def check():
        got = net.forward(X, L, "cython", keep_cache=False)[0].copy()
        np.testing.assert_array_equal(got, net.forward(X, L, "cython")[0])
        return got

    first = check()
    entry = net._fold_cache["fw"]
    check()
    assert net._fold_cache["fw"] is entry                                # reused
    d = "bw" if bidirectional else "fw"
    for name in ("input/kernel", "input/bias", f"layer0/{d}/kernel", f"layer0/{d}/bias"):
        flat = net.params[name].reshape(-1)
        old = flat[1]
        flat[1] = np.nextafter(old, np.float32(np.inf))           # one bit: folded again
        entry = net._fold_cache[d]
        check()
        assert net._fold_cache[d] is not entry, name
        flat[1] = old + 0.5                                       # and seen in the outputs
        assert not np.array_equal(check(), first), name
        flat[1] = old
        np.testing.assert_array_equal(check(), first)
    zero = net.params["input/bias"]
    zero[...] = 0.0
    base = check()
    zero[...] = -0.0                   # equal values, other bits: folded again
    entry = net._fold_cache["fw"]
    np.testing.assert_array_equal(check(), base)
    assert net._fold_cache["fw"] is not entry
    assert "_fold_cache" not in pickle.loads(pickle.dumps(net)).__dict__
