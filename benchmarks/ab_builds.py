"""Two builds of fastlstm timed side by side in one process, taking turns call by call.

On a shared machine one run of a benchmark moves by 10-40% from the next (see
docs/benchmarks.md), so a change to the kernels worth a few percent is lost between two
runs, or two processes, of the same command. Here both builds run in the same process on
the same inputs, one call each in turn: what the machine does to one call it mostly does
to its neighbour, and the per-turn ratio's quartiles say how far that held.

Make a copy of the package directory per build (the extensions built in place):

    python setup.py build_ext --inplace && cp -r fastlstm /tmp/ab/base
    # edit the kernels, then
    python setup.py build_ext --inplace && cp -r fastlstm /tmp/ab/new
    # (and rebuild the tree as it is to be committed before anything else runs)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benchmarks/ab_builds.py /tmp/ab/base /tmp/ab/new --threads 1,2

Each copy is imported under a name of its own, so it runs its own Python code and its own
compiled kernels. For each configuration and mode the script prints both medians, the
median and quartiles of new / base over the turns (below 1: the new build is faster),
and whether the two builds gave bit-identical results (outputs; in training, every
gradient).
"""

import argparse
import importlib
import importlib.util
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import cpu_name  # noqa: E402

DEFAULT_CONFIGS = "128,28,28,128;8,100,64,128;16,150,256,256;64,25,512,512"


def load_build(path, name):
    """The fastlstm package at ``path`` (a copy of the ``fastlstm`` directory with its
    extensions built), imported as the module ``name``."""
    init = os.path.join(path, "__init__.py")
    if not os.path.isfile(init):
        raise SystemExit(f"{path} is not a copy of the fastlstm package (no __init__.py)")
    spec = importlib.util.spec_from_file_location(name, init,
                                                  submodule_search_locations=[path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def parse_configs(text):
    try:
        configs = [tuple(int(v) for v in c.split(",")) for c in text.split(";") if c.strip()]
    except ValueError:
        configs = []
    if not configs or any(len(c) != 4 or min(c) < 1 for c in configs):
        raise SystemExit(f"--configs: ';'-separated B,T,I,H of positive ints, got {text!r}")
    return configs


def make_call(fl, config, mode, backend, rng_seed=0):
    """A call of one build on the configuration's fixed inputs, returning its results."""
    B, T, I, H = config
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    d_out = rng.standard_normal((B, T, H)).astype(np.float32)
    cell = fl.LSTMCell(H, I, random_state=0, dtype=np.float32)
    if mode == "infer":
        return lambda: [fl.dynamic_rnn(cell, x, None, backend=backend)[0]]

    def train():
        _, _, cache = fl.dynamic_rnn(cell, x, None, backend=backend, return_cache=True)
        grads = fl.dynamic_rnn_backward(cell, cache, d_out)
        return [grads[k] for k in sorted(cell.params)]
    return train


def compare(builds, config, mode, threads, backend, calls):
    runs = [make_call(fl, config, mode, backend) for fl in builds]
    contexts = [fl.threads(threads) for fl in builds]
    for c in contexts:
        c.__enter__()
    try:
        results = [run() for run in runs]
        for run in runs:                    # a second warm-up: the split tuner's probes
            run()
        same = all(np.array_equal(a, b) for a, b in zip(*results))
        times = [[], []]
        for _ in range(calls):
            for i, run in enumerate(runs):
                t0 = time.perf_counter()
                run()
                times[i].append(time.perf_counter() - t0)
    finally:
        for c in contexts:
            c.__exit__(None, None, None)
    a, b = (np.array(t) * 1e3 for t in times)
    ratio = b / a
    q1, med, q3 = np.quantile(ratio, [0.25, 0.5, 0.75])
    print(f"{str(config):>22} {mode:>5} {threads:>2}  {np.median(a):9.3f} {np.median(b):9.3f}"
          f"   {med:.3f} [{q1:.3f}-{q3:.3f}]  {'yes' if same else 'NO'}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="copy of the fastlstm package: the reference build")
    parser.add_argument("new", help="copy of the fastlstm package: the build to judge")
    parser.add_argument("--configs", default=DEFAULT_CONFIGS,
                        help="';'-separated B,T,I,H (LSTM, float32)")
    parser.add_argument("--modes", default="infer,train", help="infer, train or both")
    parser.add_argument("--threads", default="2", help="','-separated thread counts")
    parser.add_argument("--backend", default="cython")
    parser.add_argument("--seconds", type=float, default=3.0,
                        help="about this long per configuration, mode and thread count")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if not modes or set(modes) - {"infer", "train"}:
        raise SystemExit(f"--modes: infer and/or train, got {args.modes!r}")
    try:
        thread_counts = [int(n) for n in args.threads.split(",")]
    except ValueError:
        thread_counts = []
    if not thread_counts or min(thread_counts) < 1:
        raise SystemExit(f"--threads: ','-separated positive ints, got {args.threads!r}")
    configs = parse_configs(args.configs)
    builds = [load_build(os.path.abspath(p), f"fastlstm_ab_{i}")
              for i, p in enumerate((args.base, args.new))]
    hashes = []
    for fl in builds:
        try:
            hashes.append(importlib.import_module(fl.__name__ + "._recurrent").source_hash())
        except ImportError:
            hashes.append("no extension")
    print(f"machine: {cpu_name()}; backend {args.backend}")
    print(f"base {args.base} (kernels {hashes[0]}), new {args.new} (kernels {hashes[1]})")
    print(f"{'config (B,T,I,H)':>22} {'mode':>5} {'th':>2}  {'base ms':>9} {'new ms':>9}"
          f"   new/base median [quartiles]  same bits")
    for config in configs:
        B, T, I, H = config
        macs = 4 * B * T * (I + H) * H
        for mode in modes:
            per_call = macs * (3 if mode == "train" else 1) / 5e10   # ~50 GFLOP/s a core
            calls = int(min(200, max(8, args.seconds / (2 * per_call))))
            for threads in thread_counts:
                compare(builds, config, mode, threads, args.backend, calls)


if __name__ == "__main__":
    main()
