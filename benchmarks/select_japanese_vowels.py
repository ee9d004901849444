"""Choose the JapaneseVowels configuration by cross-validation on the training split only.

The demo's configuration for ``--dataset japanese-vowels`` must not be tuned on the test
split. This script runs a small grid (hidden size, readout, L2 penalty, learning rate,
epochs; a bidirectional LSTM over standardized frames, batches of 32) through stratified
5-fold cross-validation on the official 270 training sequences, with two model seeds,
ranks the configurations by mean validation accuracy, and only then fits the best one on
the whole training split and reports its test accuracy (seeds 0-3), so the number the
README quotes comes from a choice the test split never saw.

Usage: ``python benchmarks/select_japanese_vowels.py [--json PATH] [--threads N]``
(the ``demo`` extra provides the data). Takes a few minutes on 2 cores.
"""
import argparse
import itertools
import json
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from fastlstm import LSTMClassifier, SequenceScaler, datasets

#: The grid: every combination of these LSTMClassifier parameters.
GRID = {
    "hidden_size": [64, 128],
    "readout": ["last", "mean"],
    "alpha": [1e-3, 1e-2],
    "learning_rate": [1e-3, 3e-3],
    "max_iter": [40, 80],
}
#: Fixed for every configuration.
FIXED = dict(bidirectional=True, batch_size=32, tol=0.0)


def pipeline(params, seed, threads):
    return make_pipeline(SequenceScaler(),
                         LSTMClassifier(**FIXED, **params, random_state=seed, n_jobs=threads))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="benchmarks/results/select_japanese_vowels.json")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=2, help="model seeds per configuration")
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)

    X_train, y_train, X_test, y_test = datasets.load_japanese_vowels()
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0)
    keys = list(GRID)
    results = []
    start = time.perf_counter()
    for values in itertools.product(*GRID.values()):
        params = dict(zip(keys, values))
        scores = [cross_val_score(pipeline(params, seed, args.threads), X_train, y_train,
                                  cv=folds).mean() for seed in range(args.seeds)]
        results.append(dict(params=params, cv_accuracy=float(np.mean(scores)),
                            cv_by_seed=[float(s) for s in scores]))
        print(f"{params}  cv {np.mean(scores):.4f}  ({time.perf_counter() - start:.0f} s)")
    results.sort(key=lambda r: -r["cv_accuracy"])
    best = results[0]
    print(f"\nbest by cross-validation: {best['params']}  cv {best['cv_accuracy']:.4f}")
    test = []
    for seed in range(4):
        model = pipeline(best["params"], seed, args.threads).fit(X_train, y_train)
        test.append(float((model.predict(X_test) == y_test).mean()))
    print("its test accuracy, seeds 0-3: " + " ".join(f"{a:.3f}" for a in test))
    with open(args.json, "w") as f:
        json.dump(dict(grid=GRID, fixed=FIXED, folds=args.folds, seeds=args.seeds,
                       ranking=results, best=best, test_accuracy_seeds_0_3=test), f,
                  indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
