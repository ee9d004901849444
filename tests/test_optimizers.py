"""Optimizers: the compiled one-pass updates equal the NumPy formulas they replace."""

import numpy as np
import pytest

from fastlstm import optimizers


def _params(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((7, 5)).astype(dtype),
            "b": rng.standard_normal(5).astype(dtype)}


def _run(make, dtype, steps=5):
    params = _params(dtype)
    opt = make()
    rng = np.random.default_rng(1)
    for _ in range(steps):
        grads = {k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
        opt.step(params, grads)
    return params


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 2e-6), (np.float64, 1e-13)])
@pytest.mark.parametrize("make", [lambda: optimizers.Adam(1e-2),
                                  lambda: optimizers.SGD(1e-2, momentum=0.9)],
                         ids=["adam", "sgd"])
def test_compiled_update_equals_numpy(make, dtype, rtol, monkeypatch):
    assert optimizers._update is not None, "the compiled updates were not built"
    compiled = _run(make, dtype)
    monkeypatch.setattr(optimizers, "_update", None)
    numpy = _run(make, dtype)
    for name in compiled:
        assert compiled[name].dtype == dtype
        np.testing.assert_allclose(compiled[name], numpy[name], rtol=rtol, atol=rtol,
                                   err_msg=name)


def test_adam_first_step_is_the_papers_formula():
    params = _params(np.float64)
    start = {k: v.copy() for k, v in params.items()}
    grads = {k: np.full_like(v, 0.5) for k, v in params.items()}
    opt = optimizers.Adam(learning_rate=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    opt.step(params, grads)
    lr_t = 0.1 * np.sqrt(1 - 0.999) / (1 - 0.9)
    m, v = 0.1 * 0.5, 0.001 * 0.25
    for name in params:
        np.testing.assert_allclose(params[name], start[name] - lr_t * m / (np.sqrt(v) + 1e-8),
                                   rtol=1e-13, atol=1e-15)
