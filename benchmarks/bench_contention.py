"""Default thread count against one thread, on a quiet machine and with busy processes.

For 0, 1, 2, ... other processes spinning on the machine's cores (``--loads``), times

* the kernels: ``dynamic_rnn`` (inference) and ``dynamic_rnn`` + ``dynamic_rnn_backward``
  (training) at the seed's size (128, 28, 28, 128) and at a latency size (8, 100, 64, 128);
* a small fit: ``LSTMClassifier`` on scikit-learn's digits (8 rows of 8 pixels, 64 units,
  batch 128, ``--epochs`` epochs) -- small work per step, many kernel calls;

with fastlstm's default thread count and with one thread (``--numba``: the kernels on
the Numba backend too, with a single sequence (1, 150, 256, 256), whose hidden units
split over the threads), and the same work in PyTorch (``torch.nn.LSTM``; a plain Adam
loop for the fit) with its default thread count and with one thread, in a process of its
own under the same load. The ratio default / one thread is what a user feels: above 1,
the default threads lose to a single thread.

The two counts are timed in pairs of calls, one right after the other (which goes first
alternates), and the ratio is the median of the pairs' ratios: under load a thread gets
a whole core for a stretch of the scheduler's and half of one for the next, so the times
of either count are bimodal (seed-size training on one thread beside two busy processes:
21-25 or 41-47 ms), and medians of separate turns read 0.5-2x where both counts ran the
same code. A pair's two calls mostly fall in the same stretch.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_contention.py
"""

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import warnings

import numpy as np

import fastlstm as fl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import cpu_name, write_json  # noqa: E402

KERNEL_CONFIGS = [(128, 28, 28, 128), (8, 100, 64, 128)]   # (B, T, I, H)
NUMBA_SPLIT_CONFIG = (1, 150, 256, 256)    # --numba: one region, a barrier per step


@contextlib.contextmanager
def busy_processes(n):
    """``n`` processes spinning in a Python loop (one core each) for the enclosed block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.3 if n else 0.0)             # let them reach their loop
        yield
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def paired_times(default, one, pairs):
    """Median seconds of ``default()`` and of ``one()``, and the median over ``pairs``
    pairs of calls (one right after the other, which goes first alternating) of the
    ratio of the two calls' times (see the module's text). One untimed call each first."""
    default(), one()
    times = {default: [], one: []}
    ratios = []
    for i in range(pairs):
        for fn in ((default, one) if i % 2 == 0 else (one, default)):
            t0 = time.perf_counter()
            fn()
            times[fn].append(time.perf_counter() - t0)
        ratios.append(times[default][-1] / times[one][-1])
    return (statistics.median(times[default]), statistics.median(times[one]),
            statistics.median(ratios))


def fastlstm_kernels(B, T, I, H, threads, backend="auto"):
    rng = np.random.default_rng(0)
    cell = fl.BasicLSTMCell(H, I, random_state=0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    d_out = rng.standard_normal((B, T, H)).astype(np.float32)

    def infer():
        with fl.threads(threads):
            fl.dynamic_rnn(cell, x, backend=backend)

    def train():
        with fl.threads(threads):
            _, _, cache = fl.dynamic_rnn(cell, x, backend=backend, return_cache=True)
            fl.dynamic_rnn_backward(cell, cache, d_out)

    return infer, train


@contextlib.contextmanager
def torch_threads(n):
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def torch_kernels(B, T, I, H, threads):
    import torch
    lstm = torch.nn.LSTM(I, H, batch_first=True)
    x = torch.randn(B, T, I)
    d_out = torch.randn(B, T, H)

    def infer():
        with torch_threads(threads), torch.no_grad():
            lstm(x)

    def train():
        with torch_threads(threads):
            xg = x.detach().requires_grad_()
            lstm.zero_grad(set_to_none=True)
            lstm(xg)[0].backward(d_out)

    return infer, train


def digits():
    from sklearn.datasets import load_digits
    X, y = load_digits(return_X_y=True)
    return (X / 16.0).reshape(-1, 8, 8).astype(np.float32), y


def fastlstm_fit(epochs, n_jobs):
    from sklearn.exceptions import ConvergenceWarning
    X, y = digits()

    def fit():
        with warnings.catch_warnings():       # 5 epochs do not converge, by design
            warnings.simplefilter("ignore", ConvergenceWarning)
            fl.LSTMClassifier(hidden_size=64, max_iter=epochs, tol=0.0, n_jobs=n_jobs,
                              random_state=0).fit(X, y)
    return fit


def torch_fit(epochs, threads):
    import torch
    X, y = digits()
    X, y = torch.from_numpy(X), torch.from_numpy(y)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(8, 64, batch_first=True)
            self.out = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.out(self.lstm(x)[1][0][-1])

    def fit():
        with torch_threads(threads):
            torch.manual_seed(0)
            model = Model()
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            loss_fn = torch.nn.CrossEntropyLoss()
            for _ in range(epochs):
                for idx in torch.randperm(len(X)).split(128):
                    opt.zero_grad()
                    loss_fn(model(X[idx]), y[idx]).backward()
                    opt.step()
    return fit


def measure(impl, epochs, repeats, rounds):
    """Rows (work, default seconds, one-thread seconds, median pair ratio) of one
    implementation: ``repeats * rounds`` pairs of kernel calls, ``rounds`` pairs of fits."""
    default = None if impl != "torch" else __import__("torch").get_num_threads()
    configs = KERNEL_CONFIGS + ([NUMBA_SPLIT_CONFIG] if impl == "numba" else [])
    work = [(f"infer {c}", c, 0) for c in configs] + \
           [(f"train {c}", c, 1) for c in configs] + \
           ([] if impl == "numba" else [(f"fit digits {epochs} ep", None, None)])
    rows = []
    for label, config, mode in work:
        fns = {}
        for name, n in (("default", default), ("one", 1)):
            if config is None:
                fns[name] = (fastlstm_fit if impl == "fastlstm" else torch_fit)(epochs, n)
            elif impl == "torch":
                fns[name] = torch_kernels(*config, n)[mode]
            else:
                backend = "numba" if impl == "numba" else "auto"
                fns[name] = fastlstm_kernels(*config, n, backend)[mode]
        pairs = rounds if config is None else repeats * rounds
        rows.append((label, *paired_times(fns["default"], fns["one"], pairs)))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--loads", default="0,1,2", help="busy processes, comma-separated")
    p.add_argument("--repeats", type=int, default=5,
                   help="kernel pairs per round (fits: one pair a round)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of pairs")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--numba", action="store_true", help="the Numba backend's kernels too")
    p.add_argument("--child", choices=("fastlstm", "numba", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--json", default="benchmarks/results/bench_contention.json")
    args = p.parse_args(argv)
    if args.child:          # one implementation, its rows as JSON on stdout
        print(json.dumps(measure(args.child, args.epochs, args.repeats, args.rounds)))
        return 0

    import torch
    impls = ["fastlstm"] + (["numba"] if args.numba else []) \
        + ([] if args.no_torch else ["torch"])
    print(f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} cores; fastlstm "
          f"{fl.__version__} default threads {fl.get_num_threads()}; torch "
          f"{torch.__version__} default {torch.get_num_threads()}")
    print(f"env: OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}\n")
    print(f"{'busy':>4} {'work':>26} {'impl':>8} {'default ms':>11} {'1 thread ms':>12} "
          f"{'default/1':>10}")
    rows = []
    for load in [int(v) for v in args.loads.split(",")]:
        with busy_processes(load):
            # each implementation in a process of its own: the other's idle pool threads
            # would spin beside it (torch's slowed fastlstm's next runs 2x under load)
            for impl in impls:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", impl, "--epochs", str(args.epochs),
                     "--repeats", str(args.repeats), "--rounds", str(args.rounds)],
                    check=True, capture_output=True, text=True).stdout
                for label, d, o, ratio in json.loads(out.strip().splitlines()[-1]):
                    rows.append(dict(busy=load, work=label, impl=impl, default_ms=1e3 * d,
                                     one_thread_ms=1e3 * o, ratio=ratio))
                    print(f"{load:>4} {label:>26} {impl:>8} {1e3 * d:11.2f} {1e3 * o:12.2f} "
                          f"{ratio:10.2f}", flush=True)

    result = dict(date=time.strftime("%Y-%m-%d %H:%M"), cpu=cpu_name(),
                  cores=len(os.sched_getaffinity(0)), fastlstm=fl.__version__,
                  torch=torch.__version__, command=" ".join(sys.argv), rows=rows)
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
