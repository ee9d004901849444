"""Choose the MNIST demo's training settings by cross-validation on the training split only.

The model is the seed's and stays fixed (28 rows of 28 pixels -> dense 128 -> LSTM 128,
``forget_bias=1.0`` -> dense 10 on the last step; Adam 0.001, batches of 128). Trained
without a penalty it fits the 4,000 training digits exactly after ~20 epochs (training
loss < 0.01), and its test accuracy then depends on the seed and the last bits of the
arithmetic (0.954-0.959 over seeds 0-3). What may change is how it is trained: an L2
penalty on the weights (``alpha``), clipping of the gradient norm, standardized pixels
(``SequenceScaler``), random shifts of the training digits by up to 1-3 pixels each way
(``augment=RandomShift(k, k)``, drawn anew for every batch) and the number of epochs (at
most 30, as the issue allows).

Each configuration is scored by stratified 4-fold cross-validation on the 4,000 training
digits (3,000 / 1,000, the size of the test split), with two model seeds; one training
run per fold and seed is scored after 15, 20, 25 and 30 epochs, so the epochs cost no
extra runs. The configurations are ranked by mean validation accuracy, and only then is
the best one fitted on the whole training split and scored on the test split (seeds 0-3):
the number the README quotes comes from a choice the test split never saw.

Usage: ``python benchmarks/select_mnist.py [--jobs N] [--json PATH]`` (the ``demo`` extra
provides the data). ``--jobs 2`` runs two training runs at once, one kernel thread each:
~20 minutes on 2 cores.
"""
import argparse
import itertools
import json
import time
import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import ParameterGrid, StratifiedKFold

from fastlstm import LSTMClassifier, SequenceScaler
from fastlstm.augmentation import RandomShift
from fastlstm.demo import CONFIGS

#: Training settings searched (every combination within each dict, as scikit-learn's
#: ParameterGrid); the model itself is the seed's. The first dict is the earlier search
#: (penalty, clipping, scaling); the second adds shifted digits, with and without a penalty.
GRID = [
    {"alpha": [0.0, 1e-3, 1e-2, 3e-2, 1e-1], "clip_grad_norm": [None, 1.0],
     "scale": [False, True]},
    {"augment": [RandomShift(k, k) for k in (1, 2, 3)], "alpha": [0.0, 1e-3]},
]
#: Epochs at which each run is scored (the issue's budget is at most 30).
CHECKPOINTS = (15, 20, 25, 30)


def seed_model_params():
    """The seed's model and optimizer, as the demo's MNIST configuration states them."""
    params = dict(CONFIGS["mnist"][2])
    for key in set().union(*GRID):
        params.pop(key, None)
    return params


def train_and_score(params, seed, threads, X_fit, y_fit, X_eval, y_eval,
                    checkpoints=CHECKPOINTS):
    """Train epoch by epoch; return the accuracy on ``(X_eval, y_eval)`` at each checkpoint."""
    params = dict(params)
    if params.pop("scale", False):
        scaler = SequenceScaler().fit(X_fit)
        X_fit, X_eval = scaler.transform(X_fit), scaler.transform(X_eval)
    clf = LSTMClassifier(**seed_model_params(), **params, max_iter=1, warm_start=True,
                         tol=0.0, random_state=seed, n_jobs=threads)
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)       # one epoch per call
        for epoch in range(1, max(checkpoints) + 1):
            clf.fit(X_fit, y_fit)
            if epoch in checkpoints:
                scores[epoch] = float(clf.score(X_eval, y_eval))
    return scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="benchmarks/results/select_mnist.json")
    p.add_argument("--jobs", type=int, default=1, help="training runs at once (processes)")
    p.add_argument("--threads", type=int, default=None,
                   help="kernel threads per run (default: all cores, or 1 with --jobs > 1)")
    p.add_argument("--folds", type=int, default=4)
    p.add_argument("--seeds", type=int, default=2, help="model seeds per configuration")
    args = p.parse_args(argv)
    threads = args.threads if args.threads or args.jobs == 1 else 1

    X_train, X_test, y_train, y_test = CONFIGS["mnist"][1]()
    folds = list(StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0)
                 .split(X_train, y_train))
    grid = list(ParameterGrid(GRID))
    tasks = list(itertools.product(range(len(grid)), range(args.seeds), range(len(folds))))
    start = time.perf_counter()
    runs = Parallel(n_jobs=args.jobs, verbose=5)(
        delayed(train_and_score)(grid[g], seed, threads, X_train[folds[f][0]],
                                 y_train[folds[f][0]], X_train[folds[f][1]],
                                 y_train[folds[f][1]])
        for g, seed, f in tasks)
    print(f"cross-validation: {len(tasks)} runs in {time.perf_counter() - start:.0f} s")

    results = []
    for g, params in enumerate(grid):
        mine = [r for (gg, _, _), r in zip(tasks, runs) if gg == g]
        for epochs in CHECKPOINTS:
            results.append(dict(params=params, epochs=epochs,
                                cv_accuracy=float(np.mean([r[epochs] for r in mine]))))
    results.sort(key=lambda r: -r["cv_accuracy"])
    for r in results[:10]:
        print(f"{r['params']}  {r['epochs']} epochs  cv {r['cv_accuracy']:.4f}")
    best = results[0]
    plain = next(r for r in results if r["epochs"] == max(CHECKPOINTS)
                 and r["params"] == dict(alpha=0.0, clip_grad_norm=None, scale=False))
    readable = {"default": repr}                # RandomShift(...) as its repr in the JSON
    print(f"\nbest by cross-validation: {best['params']}, {best['epochs']} epochs, "
          f"cv {best['cv_accuracy']:.4f} (no penalty, 30 epochs: {plain['cv_accuracy']:.4f})")
    test = [train_and_score(best["params"], seed, args.threads, X_train, y_train, X_test,
                            y_test, checkpoints=(best["epochs"],))[best["epochs"]]
            for seed in range(4)]
    print("its test accuracy, seeds 0-3: " + " ".join(f"{a:.3f}" for a in test))
    with open(args.json, "w") as f:
        json.dump(dict(grid=GRID, checkpoints=CHECKPOINTS, fixed=seed_model_params(),
                       folds=args.folds, seeds=args.seeds, ranking=results, best=best,
                       test_accuracy_seeds_0_3=test), f, indent=1, **readable)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
