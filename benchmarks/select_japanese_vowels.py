"""Choose the JapaneseVowels configuration by cross-validation on the training split only.

The demo's configuration for ``--dataset japanese-vowels`` must not be tuned on the test
split. This script runs a grid (one or two bidirectional LSTM layers over standardized
frames; width, L2 penalty, epochs, batch size, dropout between two layers; around the
best of those, the readout, peepholes, gradient clipping and an input projection) through
stratified 5-fold cross-validation on the official 270 training sequences, with three
model seeds per configuration, ranks the configurations by mean validation accuracy, and
only then fits the best one on the whole training split and reports its test accuracy
(seeds 0-3), so the number the README quotes comes from a choice the test split never
saw.

An earlier, smaller grid (widths 64 / 128, last-step or mean readout, L2 1e-3 / 1e-2,
learning rate 1e-3 / 3e-3, 40 / 80 epochs, two seeds) ranked the learning rate 3e-3 and
the last-step readout first in every one of its top four; the learning rate is fixed here,
the readout varies only against the max over steps.

Usage: ``python benchmarks/select_japanese_vowels.py [--json PATH] [--jobs N]``
(the ``demo`` extra provides the data). ``--jobs 2`` runs two folds at once, one kernel
thread each: ~30 minutes on 2 cores.

``--refine K`` (a second stage, on the JSON the grid wrote): the validation folds hold 54
sequences, so the first stage's top configurations sit within one or two sequences of
each other. This stage re-scores the K best distinct configurations on ``--extra-splits``
more fold assignments (StratifiedKFold random_state 1, 2, ...; the same three seeds),
ranks them by the mean over all splits, the first stage's included, and scores the
winner on the test split (seeds 0-3). The rule was fixed before the stage was run, but
after the first stage's winner had been scored on the test split (0.978 for seed 0):
a second look, reported as such in the README.
"""
import argparse
import json
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import ParameterGrid, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline

from fastlstm import LSTMClassifier, SequenceScaler, datasets

#: The grid (scikit-learn's ParameterGrid: every combination within each dict). Dropout
#: acts between recurrent layers only, so it varies with two layers only.
GRID = [
    {"num_layers": [1], "hidden_size": [128, 256], "alpha": [1e-3, 1e-2, 3e-2],
     "max_iter": [40, 80], "batch_size": [16, 32]},
    {"num_layers": [2], "hidden_size": [64, 128], "dropout": [0.0, 0.3],
     "alpha": [1e-3, 1e-2], "max_iter": [40, 80], "batch_size": [32]},
    # around the two grids' best: other readouts and cells, gradient clipping, a dense
    # input projection (the first two dicts keep the defaults of these)
    {"num_layers": [1], "hidden_size": [128], "alpha": [3e-3, 1e-2], "max_iter": [40],
     "batch_size": [32], "readout": ["last", "max"], "cell": ["lstm", "peephole"],
     "clip_grad_norm": [None, 1.0], "input_projection": [None, 64]},
]
#: Fixed for every configuration.
FIXED = dict(bidirectional=True, learning_rate=3e-3, tol=0.0)


def pipeline(params, seed, threads):
    return make_pipeline(SequenceScaler(),
                         LSTMClassifier(**FIXED, **params, random_state=seed, n_jobs=threads))


def _cv(params, splits, seeds, threads, jobs, X, y):
    """Mean validation accuracy per (split, seed), split-major."""
    return [float(cross_val_score(pipeline(params, seed, threads), X, y, n_jobs=jobs,
                                  cv=StratifiedKFold(n_splits=5, shuffle=True,
                                                     random_state=split)).mean())
            for split in splits for seed in range(seeds)]


def _test_accuracy(params, threads, X, y, X_test, y_test):
    """Fitted on the whole training split, scored on the test split, seeds 0-3."""
    return [float((pipeline(params, seed, threads).fit(X, y).predict(X_test) == y_test)
                  .mean()) for seed in range(4)]


def _effective(params):
    """The configuration with every estimator default filled in (the grid's dicts name
    the same model in different ways)."""
    est = LSTMClassifier(**FIXED, **params)
    return json.dumps(est.get_params(), sort_keys=True, default=repr)


def refine(args, threads):
    with open(args.json) as f:
        stage1 = json.load(f)
    X, y, X_test, y_test = datasets.load_japanese_vowels()
    y, y_test = np.asarray(y), np.asarray(y_test)
    distinct, seen = [], set()
    for r in stage1["ranking"]:
        key = _effective(r["params"])
        if key not in seen:
            seen.add(key)
            distinct.append(r)
    top = distinct[:args.refine]
    splits = range(1, args.extra_splits + 1)
    results = []
    for rank, r in enumerate(top):
        extra = _cv(r["params"], splits, stage1["seeds"], threads, args.jobs, X, y)
        scores = list(r["cv_by_seed"]) + extra
        results.append(dict(params=r["params"], stage1_rank=rank,
                            stage1_cv=r["cv_accuracy"], cv_accuracy=float(np.mean(scores)),
                            cv_by_split_and_seed=scores))
        print(f"{r['params']}  stage 1 {r['cv_accuracy']:.4f}  all splits "
              f"{np.mean(scores):.4f}", flush=True)
    results.sort(key=lambda r: (-r["cv_accuracy"], r["stage1_rank"]))
    best = results[0]
    print(f"\nbest over {1 + args.extra_splits} splits: {best['params']}  "
          f"cv {best['cv_accuracy']:.4f}")
    test = _test_accuracy(best["params"], args.threads, X, y, X_test, y_test)
    print("its test accuracy, seeds 0-3: " + " ".join(f"{a:.3f}" for a in test))
    stage1["refined"] = dict(top=args.refine, extra_splits=list(splits), ranking=results,
                             best=best, test_accuracy_seeds_0_3=test)
    with open(args.json, "w") as f:
        json.dump(stage1, f, indent=1)
    print(f"wrote {args.json}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="benchmarks/results/select_japanese_vowels.json")
    p.add_argument("--threads", type=int, default=None,
                   help="kernel threads per fit (default: all cores, or 1 with --jobs > 1)")
    p.add_argument("--jobs", type=int, default=1, help="folds fitted at once (processes)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3, help="model seeds per configuration")
    p.add_argument("--refine", type=int, default=0, metavar="K",
                   help="second stage only: re-score the K best of --json's ranking")
    p.add_argument("--extra-splits", type=int, default=3)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore", ConvergenceWarning)
    threads = args.threads if args.threads or args.jobs == 1 else 1
    if args.refine:
        return refine(args, threads)

    X_train, y_train, X_test, y_test = datasets.load_japanese_vowels()
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    folds = StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=0)
    results = []
    start = time.perf_counter()
    for params in ParameterGrid(GRID):
        scores = [cross_val_score(pipeline(params, seed, threads), X_train, y_train,
                                  cv=folds, n_jobs=args.jobs).mean()
                  for seed in range(args.seeds)]
        results.append(dict(params=params, cv_accuracy=float(np.mean(scores)),
                            cv_by_seed=[float(s) for s in scores]))
        print(f"{params}  cv {np.mean(scores):.4f}  ({time.perf_counter() - start:.0f} s)",
              flush=True)
    results.sort(key=lambda r: -r["cv_accuracy"])
    best = results[0]
    print(f"\nbest by cross-validation: {best['params']}  cv {best['cv_accuracy']:.4f}")
    test = _test_accuracy(best["params"], args.threads, X_train, y_train, X_test, y_test)
    print("its test accuracy, seeds 0-3: " + " ".join(f"{a:.3f}" for a in test))
    with open(args.json, "w") as f:
        json.dump(dict(grid=GRID, fixed=FIXED, folds=args.folds, seeds=args.seeds,
                       ranking=results, best=best, test_accuracy_seeds_0_3=test), f,
                  indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
