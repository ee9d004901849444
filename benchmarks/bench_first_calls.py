"""How soon a configuration runs at its steady speed, whatever ran before it.

For each configuration, in a fresh process per (implementation, configuration, what ran
before): the calls right after one of

* ``nothing`` -- the configuration's first calls in the process;
* ``numpy`` -- a multithreaded NumPy product (512 x 512, float32) just before, whose
  OpenBLAS threads spin on for about 0.1 s;
* ``other`` -- 20 calls of another configuration (the seed's size, or (1, 150, 256, 256)
  for the seed itself) just before;

are timed one by one, and each call's time is divided by the steady time (the median of
calls 21-40). The target is every call from the third on within 10% of it. fastlstm
(``--backends``) and ``torch.nn.LSTM`` (padded, its default threads) are measured the
same way, inference and training (forward + backward with given output gradients).

``--processes N`` (default 5) runs each cell in N fresh processes, the implementations
taking turns, and reports, per call, the median of its N ratios: what every process
goes through (a warm-up) stays, a single call that this shared machine slowed down (by
10-50%, torch's as much) does not. The worst single process is reported beside it.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_first_calls.py
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import cpu_name, write_json  # noqa: E402

CONFIGS = [(128, 28, 28, 128), (1, 100, 32, 64), (1, 150, 256, 256), (8, 100, 64, 128),
           (64, 25, 512, 512)]
BEFORE = ("nothing", "numpy", "other")
CALLS = 40


def _child(impl, config, mode, before):
    """Runs in the child process: prints the JSON list of the calls' seconds."""
    from bench_kernels import fastlstm_fns, torch_fns
    B, T, I, H = config
    other = (1, 150, 256, 256) if config == CONFIGS[0] else CONFIGS[0]

    def fns(impl, B, T, I, H):
        if impl == "torch":
            return torch_fns(B, T, I, H, None, packed=False)
        return fastlstm_fns(impl, B, T, I, H, None)

    infer, train = fns(impl, B, T, I, H)
    fn = infer if mode == "inference" else train
    if impl == "numba":          # its first call compiles (seconds): not what is measured
        fn()
    if before == "numpy":
        import numpy as np
        a = np.ones((512, 512), np.float32)
        a @ a
    elif before == "other":
        other_infer, other_train = fns(impl, *other)
        for _ in range(20):
            (other_infer if mode == "inference" else other_train)()
    times = []
    for _ in range(CALLS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    print(json.dumps(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="cython")
    p.add_argument("--configs", default=None,
                   help='"B,T,I,H;B,T,I,H" (default: five of the kernel benchmark\'s)')
    p.add_argument("--befores", default=",".join(BEFORE),
                   help=f"what runs before, a subset of {','.join(BEFORE)}")
    p.add_argument("--processes", type=int, default=5,
                   help="fresh processes per cell; per call, the median of their ratios")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    configs = (CONFIGS if args.configs is None else
               [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")])
    impls = [b for b in args.backends.split(",") if b] + ["torch"]
    befores = [b for b in args.befores.split(",") if b]
    if not set(befores) <= set(BEFORE) or args.processes < 1:
        p.error(f"--befores must name some of {BEFORE}; --processes must be >= 1")
    print(f"CPU: {cpu_name()}; calls 1-8 / steady (median of calls 21-{CALLS}), median "
          f"over {args.processes} fresh process(es)")
    rows = []
    for config in configs:
        for mode in ("inference", "training"):
            for before in befores:
                ratios = {impl: [] for impl in impls}
                steadies = {impl: [] for impl in impls}
                for _ in range(args.processes):
                    for impl in impls:               # the implementations take turns
                        out = subprocess.run(
                            [sys.executable, os.path.abspath(__file__), "--child", impl,
                             ",".join(map(str, config)), mode, before],
                            capture_output=True, text=True, check=True)
                        times = json.loads(out.stdout.strip().splitlines()[-1])
                        steady = statistics.median(times[20:])
                        steadies[impl].append(steady)
                        ratios[impl].append([t / steady for t in times])
                for impl in impls:
                    per_call = [statistics.median(r[k] for r in ratios[impl])
                                for k in range(CALLS)]
                    worst_single = max(max(r[2:20]) for r in ratios[impl])
                    rows.append({"config": list(config), "mode": mode, "before": before,
                                 "impl": impl, "processes": args.processes,
                                 "steady_ms": statistics.median(steadies[impl]) * 1e3,
                                 "ratios": per_call,
                                 "worst_from_third": max(per_call[2:20]),
                                 "worst_from_third_single_process": worst_single,
                                 "process_ratios": ratios[impl]})
                    print(f"{str(config):20s} {mode:9s} {before:7s} {impl:6s} "
                          f"steady {rows[-1]['steady_ms']:8.3f} ms  "
                          + " ".join(f"{r:5.2f}" for r in per_call[:8])
                          + f"  worst 3-20: {max(per_call[2:20]):.2f} (one process: "
                          f"{worst_single:.2f})", flush=True)
    if args.json:
        write_json(args.json, {"cpu": cpu_name(), "processes": args.processes,
                               "rows": rows})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], tuple(int(v) for v in sys.argv[3].split(",")), sys.argv[4],
               sys.argv[5])
    else:
        main()
