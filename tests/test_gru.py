"""The GRU against independent oracles: torch.nn.GRU (reset_after=True) and torch autograd
of TensorFlow 1.x's GRUCell equations (reset_after=False), float64, on every CPU backend;
its interop, initialisation, estimator and refusals."""

import numpy as np
import pytest

import fastlstm as fl
from fastlstm.interop import from_keras, from_tf1, from_torch, to_keras, to_tf1, to_torch
from _helpers import loss_weights, make_case, make_cell, require, step_kernel_arrays

BACKENDS = ["numpy", "cython", "numba"]
TOL = dict(rtol=1e-10, atol=1e-10)


def tf1_gru_step(torch, x, h, p):
    """TF1 GRUCell, written from its equations (gates over [x, h], candidate over
    [x, r * h]), on torch tensors; p holds fastlstm's parameter tensors."""
    H = h.shape[-1]
    gates = torch.sigmoid(x @ p["kernel"][:, :2 * H] + h @ p["recurrent_kernel"][:, :2 * H]
                          + p["bias"][:2 * H])
    r, u = gates[..., :H], gates[..., H:]
    c = torch.tanh(x @ p["kernel"][:, 2 * H:] + (r * h) @ p["recurrent_kernel"][:, 2 * H:]
                   + p["bias"][2 * H:])
    return u * h + (1 - u) * c


def torch_oracle(cell, x, lengths, h0, R, S):
    """Outputs, final state and every gradient of sum(out R) + sum(h_final S), by torch
    autograd per sequence (each cut to its own length)."""
    torch = require("torch")
    B, T, _ = x.shape
    H = cell.num_units
    if cell.reset_after:
        module = to_torch(cell, batch_first=True).double()
        params = dict(module.named_parameters())
    else:
        params = {k: torch.tensor(v, requires_grad=True) for k, v in cell.params.items()}
    outputs, finals = np.zeros((B, T, H)), np.zeros((B, H))
    d_x, d_h0 = np.zeros_like(x), np.zeros((B, H))
    for b in range(B):
        L = int(lengths[b])
        h = torch.tensor(h0[b])[None].requires_grad_()
        xb = torch.tensor(x[b, :L])[None].requires_grad_()
        if L == 0:                                  # torch refuses empty sequences
            out, hn = torch.zeros(0, H, dtype=torch.float64), h[0]
        elif cell.reset_after:
            out, hn = module(xb, h[None])
            out, hn = out[0], hn[0, 0]
        else:
            steps, state = [], h[0]
            for t in range(L):
                state = tf1_gru_step(torch, xb[0, t], state, params)
                steps.append(state)
            out, hn = torch.stack(steps), state
        loss = (out * torch.tensor(R[b, :L])).sum() + (hn * torch.tensor(S[b])).sum()
        loss.backward()
        outputs[b, :L] = out.detach().numpy()
        finals[b] = hn.detach().numpy().reshape(H)
        d_h0[b] = h.grad.numpy()[0]
        if L:
            d_x[b, :L] = xb.grad.numpy()[0]
    if cell.reset_after:
        g = {n: p.grad.numpy() for n, p in params.items()}
        weights = {"kernel": g["weight_ih_l0"].T, "recurrent_kernel": g["weight_hh_l0"].T,
                   "bias": g["bias_ih_l0"], "recurrent_bias": g["bias_hh_l0"]}
    else:
        weights = {n: p.grad.numpy() for n, p in params.items()}
    return outputs, finals, d_x, d_h0, weights


@pytest.mark.parametrize("time_major", [False, True], ids=["batch_major", "time_major"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["torch_form", "tf1_form"])
def test_gru_equals_torch_autograd_in_float64(reset_after, backend, time_major):
    require("torch")
    B, T, I, H = 5, 6, 4, 3
    cell = make_cell("gru_reset_after" if reset_after else "gru", H, I, seed=2)
    x, lengths, h0 = make_case(cell, B, T, seed=3, lengths=[6, 0, 3, 1, 6])
    R, S = loss_weights(cell, B, T, seed=3)
    want = torch_oracle(cell, x, lengths, h0, R, S)
    args = (x.transpose(1, 0, 2).copy(), R.transpose(1, 0, 2).copy()) if time_major else (x, R)
    out, state, cache = fl.dynamic_rnn(cell, args[0], lengths, h0, time_major, backend, True)
    grads = fl.dynamic_rnn_backward(cell, cache, args[1], S)
    if time_major:
        out, grads["inputs"] = out.transpose(1, 0, 2), grads["inputs"].transpose(1, 0, 2)
    np.testing.assert_allclose(out, want[0], **TOL)
    np.testing.assert_allclose(state, want[1], **TOL)
    np.testing.assert_allclose(grads["inputs"], want[2], **TOL)
    np.testing.assert_allclose(grads["initial_state"], want[3], **TOL)
    assert set(want[4]) == set(cell.params)
    for name, g in want[4].items():
        np.testing.assert_allclose(grads[name], g, err_msg=name, **TOL)


def test_gru_initialisation_follows_tf1_and_torch():
    tf1 = fl.GRUCell(4, 3, random_state=0)
    torch_form = fl.GRUCell(4, 3, reset_after=True, random_state=0)
    np.testing.assert_array_equal(tf1.params["bias"], [1.0] * 8 + [0.0] * 4)
    assert set(tf1.params) == {"kernel", "recurrent_kernel", "bias"}
    assert not torch_form.params["bias"].any() and not torch_form.params["recurrent_bias"].any()
    assert tf1.params["recurrent_kernel"].shape == (4, 12)
    assert "reset_after=True" in repr(torch_form)
    with pytest.raises(ValueError, match="reset_after must be a bool"):
        fl.GRUCell(4, 3, reset_after="yes")


def test_torch_gru_round_trips_exactly():
    torch = require("torch")
    torch.manual_seed(0)
    module = torch.nn.GRU(3, 5)
    cell = from_torch(module)
    assert isinstance(cell, fl.GRUCell) and cell.reset_after
    back = to_torch(cell, batch_first=False)
    for name, value in module.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name].numpy(), value.numpy())
    x = np.random.RandomState(1).randn(7, 2, 3).astype(np.float32)
    out, _ = fl.dynamic_rnn(cell, x, time_major=True)
    with torch.no_grad():
        want = module(torch.from_numpy(x))[0].numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_only_the_torch_form_converts_to_torch_and_only_the_tf1_form_to_tf1():
    require("torch")
    with pytest.raises(ValueError, match="reset_after=True"):
        to_torch(fl.GRUCell(3, 2), batch_first=True)
    with pytest.raises(ValueError, match="reset_after=False"):
        to_tf1(fl.GRUCell(3, 2, reset_after=True))


def keras_gru(weights, x, reset_after):
    """Keras's GRU cell from its source's equations (gate order z, r, h), one sequence."""
    kernel, recurrent, bias = weights
    H = recurrent.shape[0]
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros_like(bias))
    h = np.zeros(H)
    for x_t in x:
        xz, xr, xh = np.split(x_t @ kernel + b_in, 3)
        rz, rr, rh = np.split(h @ recurrent + b_rec, 3)
        z = 1 / (1 + np.exp(-(xz + rz)))
        r = 1 / (1 + np.exp(-(xr + rr)))
        if reset_after:
            hh = np.tanh(xh + r * rh)
        else:
            hh = np.tanh(xh + (r * h) @ recurrent[:, 2 * H:])
        h = z * h + (1 - z) * hh
    return h


@pytest.mark.parametrize("reset_after", [False, True])
def test_keras_gru_weights_compute_keras_gru(reset_after):
    rng = np.random.RandomState(2)
    I, H = 3, 4
    bias = rng.randn(2, 3 * H) if reset_after else rng.randn(3 * H)
    weights = [rng.randn(I, 3 * H), rng.randn(H, 3 * H), bias]
    cell = from_keras(weights)
    assert isinstance(cell, fl.GRUCell) and cell.reset_after == reset_after
    x = rng.randn(1, 5, I)
    _, h = fl.dynamic_rnn(cell, x)
    np.testing.assert_allclose(h[0], keras_gru(weights, x[0], reset_after), rtol=1e-12)
    for got, want in zip(to_keras(cell), weights):
        np.testing.assert_array_equal(got, want)


def test_tf1_gru_variables_compute_tf1_gru():
    rng = np.random.RandomState(3)
    I, H = 3, 4
    v = {"gates/kernel": rng.randn(I + H, 2 * H), "gates/bias": rng.randn(2 * H),
         "candidate/kernel": rng.randn(I + H, H), "candidate/bias": rng.randn(H)}
    cell = from_tf1(v["gates/kernel"], v["gates/bias"], cell="gru",
                    candidate_kernel=v["candidate/kernel"], candidate_bias=v["candidate/bias"])
    assert isinstance(cell, fl.GRUCell) and not cell.reset_after
    x = rng.randn(1, 5, I)
    h = np.zeros(H)
    for x_t in x[0]:                       # TF1's GRUCell.call, by hand
        value = 1 / (1 + np.exp(-(np.concatenate([x_t, h]) @ v["gates/kernel"]
                                  + v["gates/bias"])))
        r, u = value[:H], value[H:]
        c = np.tanh(np.concatenate([x_t, r * h]) @ v["candidate/kernel"] + v["candidate/bias"])
        h = u * h + (1 - u) * c
    _, got = fl.dynamic_rnn(cell, x)
    np.testing.assert_allclose(got[0], h, rtol=1e-12)
    for name, value in to_tf1(cell).items():
        np.testing.assert_array_equal(value, v[name])
    with pytest.raises(ValueError, match="candidate_kernel and candidate_bias"):
        from_tf1(v["gates/kernel"], v["gates/bias"], cell="gru")
    with pytest.raises(ValueError, match="belong to a GRU"):
        from_tf1(np.zeros((7, 16)), np.zeros(16), candidate_bias=np.zeros(4))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_gru_estimator_learns_and_agrees_across_backends():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    X = (X / 16).reshape(-1, 8, 8).astype(np.float32)
    scores, probas = {}, {}
    for backend in BACKENDS:
        clf = fl.LSTMClassifier(cell="gru", hidden_size=32, max_iter=15, random_state=0,
                                backend=backend, learning_rate=0.01, n_iter_no_change=100)
        clf.fit(X[:1200], y[:1200])
        scores[backend] = clf.score(X[1200:], y[1200:])
        probas[backend] = clf.predict_proba(X[1200:1300])
        assert "layer0/fw/recurrent_bias" in clf.network_.params
    assert min(scores.values()) > 0.85, scores
    for backend in ("cython", "numba"):
        np.testing.assert_allclose(probas[backend], probas["numpy"], rtol=1e-3, atol=1e-4)


def test_a_backend_without_kernels_for_a_cell_says_so():
    from fastlstm.backends import Backend
    from fastlstm.backends import numpy_backend

    class LSTMOnly:
        NAME, CELLS, GEMM_KERNELS = "lstm-only", ("lstm",), None
        lstm_forward = numpy_backend.lstm_forward
        lstm_backward = numpy_backend.lstm_backward

    be = Backend(LSTMOnly)
    cell = make_cell("gru", 3, 2)
    with pytest.raises(ValueError, match="no kernels for 'gru' cells"):
        fl.dynamic_rnn(cell, np.zeros((1, 2, 2)), backend=be)
    out, _ = fl.dynamic_rnn(make_cell("lstm", 3, 2), np.ones((1, 2, 2)), backend=be)
    assert out.shape == (1, 2, 3)


# ------------------------------------------- float32 per-step products on the fused tiles
STEP_TILE_CELLS = ["gru", "gru_reset_after", "rnn"]


def _step_tiles_or_skip():
    from fastlstm.backends import cython_backend
    if not cython_backend.FUSED_STEP:
        pytest.skip("the fused kernels do not run here (a CPU with neither AVX-512 nor "
                    "AVX2 + FMA, or FASTLSTM_NO_FUSED=1): the GRU and RNN steps run on BLAS")
    return cython_backend


@pytest.mark.parametrize("name", STEP_TILE_CELLS)
def test_float32_step_tiles_run_and_match_float64(name, monkeypatch):
    """float32 GRU / RNN on the Cython backend, batch of 2 or more: the per-step products
    run on the fused kernels' tiles (their operands are packed for them), and outputs and
    gradients match the float64 NumPy reference to float32 accuracy."""
    cython_backend = _step_tiles_or_skip()
    from fastlstm import _recurrent
    packed, pack_t, pack_rows = [], _recurrent.pack_fused_t, cython_backend._packed_rows_f32

    def spy_t(W, *args, **kwargs):                 # packs W.T: records op(B).T = W
        packed.append(W.shape)
        return pack_t(W, *args, **kwargs)

    def spy_rows(B):                               # packs B: records op(B).T = B.T
        packed.append(B.shape[::-1])
        return pack_rows(B)
    monkeypatch.setattr(_recurrent, "pack_fused_t", spy_t)
    monkeypatch.setattr(cython_backend, "_packed_rows_f32", spy_rows)
    cell64 = make_cell(name, 96, 5)
    cell32 = make_cell(name, 96, 5, dtype=np.float32)
    cell32 = cell32.load_params({k: v.astype(np.float32) for k, v in cell64.params.items()})
    x, lengths, state = make_case(cell64, 9, 7, seed=3)
    out64, final64, cache64 = fl.dynamic_rnn(cell64, x, lengths, state, backend="numpy",
                                             return_cache=True)
    out32, final32, cache32 = fl.dynamic_rnn(cell32, x.astype(np.float32), lengths,
                                             None if state is None else
                                             np.asarray(state, np.float32),
                                             backend="cython", return_cache=True)
    d = np.random.default_rng(4).standard_normal(out64.shape)
    g64 = fl.dynamic_rnn_backward(cell64, cache64, d)
    g32 = fl.dynamic_rnn_backward(cell32, cache32, d.astype(np.float32))
    H, G = 96, 96 if name == "rnn" else 3 * 96
    # op(B).T of each step product: forward h W (G, H), backward dz W^T (H, G); the
    # TF1 form's two products a step: W_ru (2H wide) and W_c (H wide) each way
    want = ([(2 * H, H), (H, H), (H, 2 * H), (H, H)] if name == "gru" else [(G, H), (H, G)])
    assert [s for s in packed if s in want] == want, packed
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(final32, final64, rtol=1e-4, atol=1e-5)
    for key in g64:
        np.testing.assert_allclose(g32[key], g64[key], rtol=2e-4, atol=2e-4, err_msg=key)


@pytest.mark.parametrize("name", STEP_TILE_CELLS)
def test_float32_step_tiles_give_a_row_the_same_bits_in_any_batch(name):
    """Each element of a step's product is one in-order sum on the tiles: a sequence's
    outputs and gradients do not depend on the other rows of its batch (nor on whether
    a step has it alone), nor on the thread count."""
    _step_tiles_or_skip()
    cell = make_cell(name, 64, 4, dtype=np.float32)
    x, _, _ = make_case(cell, 6, 9, seed=5, lengths=np.full(6, 9), initial_state=False)
    d = np.random.default_rng(6).standard_normal((6, 9, 64)).astype(np.float32)
    results = []
    for rows, threads in ((slice(0, 6), 2), (slice(0, 6), 1), (slice(0, 2), 2)):
        with fl.threads(threads):
            out, _, cache = fl.dynamic_rnn(cell, x[rows], backend="cython",
                                           return_cache=True)
            grads = fl.dynamic_rnn_backward(cell, cache, d[rows])
        results.append((out[:2], grads["inputs"][:2]))
    for out, d_x in results[1:]:
        np.testing.assert_array_equal(out, results[0][0])
        np.testing.assert_array_equal(d_x, results[0][1])
    # a row alone in its chunk's last steps (the one-row path) and in company all along
    alone = fl.dynamic_rnn(cell, x[:2], np.array([9, 3]), backend="cython")[0]
    company = fl.dynamic_rnn(cell, x[[0, 0]], backend="cython")[0]
    np.testing.assert_array_equal(alone[0], company[0])


def test_float32_step_tiles_check_their_operands():
    """The kernels refuse a wrongly packed float32 operand, two packings of one operand,
    a float64 call, and (reset_after=False) one of the GRU's two operands alone."""
    _step_tiles_or_skip()
    from fastlstm import _recurrent
    H, B = 16, 3
    W, seq_len, hs, xproj, empty = step_kernel_arrays(H, B)
    b_h = np.zeros(3 * H, np.float32)

    def packed(B_op):                      # the operand of a @ B_op, as the backend packs it
        return _recurrent.pack_fused_t(np.ascontiguousarray(B_op.T))
    with pytest.raises(ValueError, match="w_f32 must be"):
        _recurrent.gru_forward(xproj, W, b_h, True, seq_len, hs, empty, empty, 1, B,
                               w_f32=packed(W.T))                   # (3H, H): wrong way
    with pytest.raises(ValueError, match="both"):
        _recurrent.gru_forward(xproj, W, b_h, False, seq_len, hs, empty, empty, 1, B,
                               w_f32=packed(W[:, :2 * H]))
    with pytest.raises(ValueError, match="not both"):
        _recurrent.rnn_forward(xproj[..., :H].copy(), W[:, :H].copy(), seq_len, hs, 1, B,
                               w_f32=packed(W[:, :H]), w_bf16=np.zeros((1, 8, 64), np.uint32))
    with pytest.raises(ValueError, match="float32"):
        _recurrent.rnn_forward(xproj[..., :H].astype(np.float64), W[:, :H].astype(np.float64),
                               seq_len, hs.astype(np.float64), 1, B, w_f32=packed(W[:, :H]))


def test_step_operand_packing_is_pack_fused_t_of_the_transpose():
    """The forward's operand B is packed by block copies into the layout that
    ``pack_fused_t(B.T)`` gives (a last block narrower than 64 columns included)."""
    cython_backend = _step_tiles_or_skip()
    from fastlstm import _recurrent
    rng = np.random.default_rng(2)
    for K, N in ((16, 192), (7, 100), (33, 40)):
        B = rng.standard_normal((K, 2 * N)).astype(np.float32)[:, ::2]   # strided too
        np.testing.assert_array_equal(cython_backend._packed_rows_f32(B),
                                      _recurrent.pack_fused_t(np.ascontiguousarray(B.T)))
