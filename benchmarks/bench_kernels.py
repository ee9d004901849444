"""fastlstm's backends against torch.nn.LSTM / torch.nn.GRU (oneDNN), side by side in one
process (``--cell gru``: GRUCell(reset_after=True), torch's GRU form).

Same thread count for both (kernels, BLAS and torch), float32, warm-up first, median of
repeats. For each configuration (B, T, I, H): inference (forward) and training (forward +
backward with weight gradients) time, GFLOP/s (forward = 2*G*B*H*(I+H)*T, G = 4 gates for
the LSTM and 3 for the GRU, training = 3x),
percent of the sgemm rate measured in the same run, and the ratio torch / fastlstm (> 1
means fastlstm is faster). A variable-length batch is compared with torch both padded
and packed (pack_padded_sequence).

``--compute-dtype bfloat16``: fastlstm with bfloat16 products (float32 state and
accumulation) against torch with bfloat16 weights and inputs (inference) and under
``torch.autocast("cpu", dtype=torch.bfloat16)`` (training), with torch's float32 as a
second reference ("torch f32") in the same run.

Run it with the OpenBLAS variables of this workplace unset (they slow OpenBLAS):

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_kernels.py
"""

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

import fastlstm as fl

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import build_state, cpu_name, write_json  # noqa: E402

CONFIGS = [  # (B, T, I, H)
    (128, 28, 28, 128),                                             # the seed's model
    (1, 100, 32, 64), (1, 150, 256, 256), (8, 100, 64, 128), (32, 100, 64, 64),  # latency
    (16, 150, 256, 256), (64, 25, 512, 512), (64, 50, 512, 512),    # middle
    (64, 25, 1024, 1024),                                           # GEMM-bound
]
VARLEN = (64, 100, 64, 128)          # lengths uniform in 25..100


def sample_times(fn, repeats, min_time=0.0):
    """Times of ``repeats`` calls (more until ``min_time`` seconds), after a warm-up."""
    fn()                                                  # warm-up / JIT
    times = []
    while len(times) < repeats or sum(times) < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def median_time(fn, repeats, min_time=0.0):
    return statistics.median(sample_times(fn, repeats, min_time))


def interleaved_medians(fns, repeats, min_time, rounds):
    """Median time of each of ``fns`` (name -> callable), measured in ``rounds`` rounds that
    take turns, so that a noisy stretch of the shared machine hits every implementation
    alike instead of whichever ran then."""
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name] += sample_times(fn, max(1, -(-repeats // rounds)),
                                          min_time / rounds)
    return {name: statistics.median(t) for name, t in samples.items()}


def sgemm_rate(threads, n=2048, repeats=5):
    from threadpoolctl import threadpool_limits
    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    with threadpool_limits(threads, user_api="blas"):
        t = median_time(lambda: a @ a, repeats)
    return 2 * n ** 3 / t / 1e9


def fastlstm_fns(backend, B, T, I, H, lengths, kind="lstm", compute_dtype=None):
    rng = np.random.default_rng(0)
    cell = (fl.GRUCell(H, I, reset_after=True, random_state=0) if kind == "gru"
            else fl.BasicLSTMCell(H, I, random_state=0))
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    d_out = rng.standard_normal((B, T, H)).astype(np.float32)

    def infer():
        fl.dynamic_rnn(cell, x, lengths, backend=backend, compute_dtype=compute_dtype)

    def train():
        _, _, cache = fl.dynamic_rnn(cell, x, lengths, backend=backend, return_cache=True,
                                     compute_dtype=compute_dtype)
        fl.dynamic_rnn_backward(cell, cache, d_out)

    return infer, train


def torch_fns(B, T, I, H, lengths, packed, kind="lstm", bf16=False):
    """torch's inference and training calls; with ``bf16``, inference with bfloat16 weights
    and inputs, training under autocast to bfloat16."""
    import contextlib

    import torch
    lstm = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(I, H, batch_first=True)
    x = torch.randn(B, T, I)
    infer_lstm, infer_x = lstm, x
    if bf16:
        infer_lstm = (torch.nn.GRU if kind == "gru" else torch.nn.LSTM)(I, H, batch_first=True)
        infer_lstm.load_state_dict(lstm.state_dict())
        infer_lstm, infer_x = infer_lstm.to(torch.bfloat16), x.to(torch.bfloat16)
    autocast = (functools.partial(torch.autocast, "cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext)
    d_out = torch.randn(B, T, H)
    pack = torch.nn.utils.rnn.pack_padded_sequence

    def run(net, inp):
        if packed:
            out, _ = net(pack(inp, torch.as_tensor(lengths), batch_first=True,
                              enforce_sorted=False))
            return torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True,
                                                          total_length=T)[0]
        return net(inp)[0]

    def infer():
        with torch.no_grad():
            run(infer_lstm, infer_x)

    def train():
        xg = x.detach().requires_grad_()
        lstm.zero_grad(set_to_none=True)
        with autocast():
            out = run(lstm, xg)
        out.backward(d_out.to(out.dtype))

    return infer, train


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--min-time", type=float, default=0.3,
                   help="keep repeating until this many seconds were measured")
    p.add_argument("--rounds", type=int, default=3,
                   help="torch and fastlstm take turns this many times per configuration")
    p.add_argument("--backends", default="cython,numba")
    p.add_argument("--cell", choices=("lstm", "gru"), default="lstm")
    p.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default="float32",
                   help="bfloat16: bfloat16 products on both sides (module docstring)")
    p.add_argument("--configs", default="all",
                   help="'all', or ';'-separated B,T,I,H tuples")
    p.add_argument("--no-varlen", action="store_true")
    p.add_argument("--json", default=None,
                   help="default benchmarks/results/bench_kernels.json (_gru.json for GRUs)")
    p.add_argument("--plot", default=None, help="write a PNG bar chart of the ratios")
    args = p.parse_args(argv)
    if args.json is None:
        args.json = ("benchmarks/results/bench_kernels"
                     + ("_gru" if args.cell == "gru" else "")
                     + ("_bf16" if args.compute_dtype == "bfloat16" else "") + ".json")
    bf16 = args.compute_dtype == "bfloat16"

    import torch
    from threadpoolctl import threadpool_info, threadpool_limits
    torch.set_num_threads(args.threads)
    backends = [b for b in args.backends.split(",") if b]
    configs = (CONFIGS if args.configs == "all" else
               [tuple(int(v) for v in c.split(",")) for c in args.configs.split(";")])

    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')})"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    rate = sgemm_rate(args.threads)
    print(build_state()[1])
    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus; "
          f"threads {args.threads}; torch {torch.__version__} "
          f"(mkldnn={torch.backends.mkldnn.is_available()}); numpy {np.__version__}")
    print(f"BLAS: {'; '.join(sorted(set(blas)))}; OpenBLAS env: {env}")
    from fastlstm.backends import _numba_tiles
    from fastlstm.backends.cython_backend import BF16_CELLS, _recurrent, kernel_path
    switches = {k: os.environ[k] for k in ("FASTLSTM_NO_AVX512", "FASTLSTM_NO_FUSED",
                                           "FASTLSTM_NO_SMALL_GEMM") if k in os.environ}
    print(f"kernel path (cython, float32): {kernel_path()}"
          + (f"; bfloat16 kernels: {_recurrent.cpu_has_bf16() and 'lstm' in BF16_CELLS}"
             if bf16 else "")
          + (f"; switches {switches}" if switches else "")
          + "; numba: vectorized gate math, per-step products in register tiles of "
          f"{_numba_tiles.TILE_ROWS} x {_numba_tiles.PANEL_WIDTH}")
    print(f"sgemm 2048^3 rate: {rate:.0f} GFLOP/s\n")

    cases = [(c, None) for c in configs]
    if not args.no_varlen:
        lengths = np.random.default_rng(1).integers(25, 101, size=VARLEN[0])
        cases.append((VARLEN, lengths))
    # Torch and the OpenMP backends take turns within each configuration (--rounds), so
    # that the shared machine's noisy stretches hit them alike. Numba runs in a phase of
    # its own afterwards, taking turns with torch's padded LSTM alone ("torch" there, the
    # reference of Numba's ratios): after Numba's worker threads, torch's packed LSTM
    # took 2.2 s instead of 16 ms (Zen 4), so Numba's ratio to it uses the first phase's.
    times = {}
    turns = (["torch f32"] if bf16 else []) + ["torch", "torch packed"]
    turns += [b for b in backends if b != "numba"]
    late = [b for b in backends if b == "numba"]
    late_peer = {}              # (config, mode) -> torch's time in the late phase

    def make(impl, B, T, I, H, lengths):
        if impl.startswith("torch"):
            return torch_fns(B, T, I, H, lengths if lengths is not None else [T] * B,
                             impl == "torch packed", args.cell, bf16 and impl != "torch f32")
        return fastlstm_fns(impl, B, T, I, H, lengths, args.cell,
                            "bfloat16" if bf16 else None)

    with fl.threads(args.threads), threadpool_limits(args.threads, user_api="blas"):
        for group in ([turns] + [["torch", b] for b in late]):
            for k, ((B, T, I, H), lengths) in enumerate(cases):
                impls = [i for i in group if i != "torch packed" or lengths is not None]
                for mode in ("infer", "train"):
                    fns = {i: make(i, B, T, I, H, lengths)[mode == "train"] for i in impls}
                    for impl, t in interleaved_medians(fns, args.repeats, args.min_time,
                                                       args.rounds).items():
                        if group is not turns and impl == "torch":
                            late_peer[k, mode] = t
                        else:
                            times[k, mode, impl] = t

    rows = []
    if bf16:
        print("torch: bfloat16 weights (infer) / autocast (train); torch/fl ratios are "
              "torch f32 / torch [/ torch packed]")
    print(f"{'config (B,T,I,H)':>22} {'mode':>6} {'impl':>14} {'ms':>9} {'GFLOP/s':>8} "
          f"{'%sgemm':>7} {'torch/fl':>9}")
    for k, ((B, T, I, H), lengths) in enumerate(cases):
        gates = 3 if args.cell == "gru" else 4
        flop = 2 * gates * B * H * (I + H) * T
        if lengths is not None:          # useful work only: the steps that exist
            flop = 2 * gates * H * (I + H) * int(lengths.sum())
        label = f"{(B, T, I, H)}" + (" var" if lengths is not None else "")
        peers = (["torch f32"] if bf16 else []) + ["torch"]
        peers += ["torch packed"] if lengths is not None else []
        for mode, mult in (("infer", 1), ("train", 3)):
            for name in peers + backends:
                t = times[k, mode, name]
                gflops = mult * flop / t / 1e9
                row = dict(config=[B, T, I, H], varlen=lengths is not None, mode=mode,
                           impl=name, ms=1e3 * t, gflops=gflops, pct_sgemm=100 * gflops / rate)
                if name not in peers:
                    row.update({f"ratio_vs_{peer.replace(' ', '_')}": times[k, mode, peer] / t
                                for peer in peers})
                    if name in late:             # torch timed beside it, in its phase
                        row["ratio_vs_torch"] = late_peer[k, mode] / t
                        row["torch_ms_same_phase"] = 1e3 * late_peer[k, mode]
                rows.append(row)
                ratio = " / ".join(f"{row[r]:.2f}" for r in row if r.startswith("ratio"))
                print(f"{label:>22} {mode:>6} {name:>14} {1e3 * t:9.2f} {gflops:8.1f} "
                      f"{row['pct_sgemm']:6.1f}% {ratio:>9}", flush=True)

    result = dict(date=time.strftime("%Y-%m-%d %H:%M"), cpu=cpu_name(), threads=args.threads,
                  cell=args.cell, compute_dtype=args.compute_dtype,
                  sgemm_gflops=rate, blas=blas, torch=torch.__version__,
                  command=" ".join(sys.argv), rows=rows)
    write_json(args.json, result)
    if args.plot:
        plot(rows, backends, args.plot)
        print(f"wrote {args.plot}")
    return 0


def plot(rows, backends, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
    for ax, mode in zip(axes, ("infer", "train")):
        sel = [r for r in rows if r["mode"] == mode and r["impl"] in backends]
        labels = sorted({(tuple(r["config"]), r["varlen"]) for r in sel},
                        key=lambda c: [tuple(r["config"]) for r in rows].index(c[0]))
        width = 0.8 / len(backends)
        for k, be in enumerate(backends):
            vals = [next(r["ratio_vs_torch"] for r in sel if r["impl"] == be
                         and (tuple(r["config"]), r["varlen"]) == lab) for lab in labels]
            ax.bar(np.arange(len(labels)) + k * width, vals, width, label=be)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
        ax.set_xticklabels([",".join(map(str, c)) + (" var" if v else "") for c, v in labels],
                           rotation=60, ha="right", fontsize=8)
        ax.set_title(f"{mode}: torch time / fastlstm time (>1: fastlstm faster)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
