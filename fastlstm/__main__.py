"""python -m fastlstm [demo|kernels] ...

demo (the default): train the MNIST row-LSTM (or --dataset digits / japanese-vowels)
and print accuracy and speed. kernels: time one forward and backward pass of every
backend at the MNIST model's size and compare it with the reference.
"""

import argparse
import statistics
import sys
import time

import numpy as np


def _time(fn, repeats):
    fn()                                        # warm-up (and JIT compile for numba)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def kernels(args):
    import fastlstm as fl
    B, T, I, H = args.batch, args.steps, args.inputs, args.units
    rng = np.random.default_rng(0)
    cell = fl.BasicLSTMCell(H, I, random_state=0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B)
    d_out = rng.standard_normal((B, T, H)).astype(np.float32)
    cd = args.compute_dtype
    print(f"fastlstm {fl.__version__}: BasicLSTMCell(num_units={H}, input_size={I}), "
          f"batch {B}, {T} steps, lengths {lengths.min()}..{lengths.max()}, float32"
          + (f", compute_dtype={cd!r}" if cd else ""))
    print(f"backends available: {', '.join(fl.available_backends())}; "
          f"threads: {args.threads or fl.get_num_threads()}")
    if "cython" in fl.available_backends():
        from .backends.cython_backend import kernel_path
        print(f"cython kernels here: {kernel_path()}")
        from ._recurrent import have_amx_kernels, have_bf16_kernels
        print("compute_dtype='bfloat16': " + (
            "every cell's kernels and the GEMMs on bfloat16 tiles (AVX512-BF16"
            + (", the GEMMs on AMX tiles)" if have_amx_kernels() else ")")
            if have_bf16_kernels() else "emulated in NumPy (slow: no AVX512-BF16 here)"))
    ref_out, ref_state = fl.dynamic_rnn(cell, x, lengths, backend="numpy", compute_dtype=cd)
    print(f"outputs {ref_out.shape}, state.c {ref_state.c.shape}, state.h {ref_state.h.shape}")
    print(f"{'backend':>8} {'forward ms':>11} {'fwd+bwd ms':>11} {'max |diff| vs numpy':>20}")
    with fl.threads(args.threads):
        for name in fl.available_backends():
            def forward():
                return fl.dynamic_rnn(cell, x, lengths, backend=name, compute_dtype=cd)

            def train_step():
                _, _, cache = fl.dynamic_rnn(cell, x, lengths, backend=name, return_cache=True,
                                             compute_dtype=cd)
                return fl.dynamic_rnn_backward(cell, cache, d_out)

            diff = float(np.abs(forward()[0] - ref_out).max())
            repeats = max(1, args.repeats // 5) if name == "numpy" else args.repeats
            f_ms, t_ms = 1e3 * _time(forward, repeats), 1e3 * _time(train_step, repeats)
            print(f"{name:>8} {f_ms:11.2f} {t_ms:11.2f} {diff:20.2e}")
    return 0


def demo(args):
    from .demo import run
    run(args.dataset, epochs=args.epochs, plot=args.plot, threads=args.threads,
        random_state=args.random_state, augment=not args.no_augment,
        compute_dtype=args.compute_dtype)
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["demo"] + argv                     # no command: the demo
    parser = argparse.ArgumentParser(prog="python -m fastlstm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    from .demo import CONFIGS
    d = sub.add_parser("demo", help="train and evaluate a sequence classifier on real data")
    d.add_argument("--dataset", choices=sorted(CONFIGS), default="mnist")
    d.add_argument("--epochs", type=int, default=None,
                   help="default: the documented budget of the data set")
    d.add_argument("--plot", default=None, help="save loss / accuracy curves to this PNG")
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--random-state", type=int, default=0)
    d.add_argument("--compute-dtype", choices=("float32", "bfloat16"), default=None,
                   help="bfloat16: bfloat16 products, float32 state (LSTMClassifier's "
                        "compute_dtype)")
    d.add_argument("--no-augment", action="store_true",
                   help="train without the data set's augmentation (MNIST: random shifts)")
    d.set_defaults(func=demo)
    k = sub.add_parser("kernels", help="time every backend at the MNIST model's LSTM size")
    k.add_argument("--batch", type=int, default=128)
    k.add_argument("--steps", type=int, default=28)
    k.add_argument("--inputs", type=int, default=28)
    k.add_argument("--units", type=int, default=128)
    k.add_argument("--repeats", type=int, default=20)
    k.add_argument("--threads", type=int, default=None)
    k.add_argument("--compute-dtype", choices=("bfloat16",), default=None,
                   help="time bfloat16 products (float32 state) instead of float32")
    k.set_defaults(func=kernels)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
