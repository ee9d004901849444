"""``python -m fastlstm``: run the seed's LSTM size on every backend and print timings.

Until the MNIST demo lands this is the main job: one forward and backward pass of a
128-unit LSTM over a batch of 128 sequences of 28 steps of 28 features (the seed's
MNIST row model), checked against the NumPy reference, with the median time of each
backend.
"""

import argparse
import statistics
import sys
import time

import numpy as np

import fastlstm as fl


def _time(fn, repeats):
    fn()                                        # warm-up (and JIT compile for numba)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastlstm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--inputs", type=int, default=28)
    parser.add_argument("--units", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)

    B, T, I, H = args.batch, args.steps, args.inputs, args.units
    rng = np.random.default_rng(0)
    cell = fl.BasicLSTMCell(H, I, random_state=0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    lengths = rng.integers(T // 2, T + 1, size=B)
    d_out = rng.standard_normal((B, T, H)).astype(np.float32)
    print(f"fastlstm {fl.__version__}: BasicLSTMCell(num_units={H}, input_size={I}), "
          f"batch {B}, {T} steps, lengths {lengths.min()}..{lengths.max()}, float32")
    print(f"backends available: {', '.join(fl.available_backends())}; "
          f"threads: {args.threads or fl.get_num_threads()}")

    ref_out, ref_state = fl.dynamic_rnn(cell, x, lengths, backend="numpy")
    print(f"outputs {ref_out.shape}, state.c {ref_state.c.shape}, state.h {ref_state.h.shape}")
    print(f"{'backend':>8} {'forward ms':>11} {'fwd+bwd ms':>11} {'max |diff| vs numpy':>20}")
    with fl.threads(args.threads):
        for name in fl.available_backends():
            def forward():
                return fl.dynamic_rnn(cell, x, lengths, backend=name)

            def train_step():
                _, _, cache = fl.dynamic_rnn(cell, x, lengths, backend=name, return_cache=True)
                return fl.dynamic_rnn_backward(cell, cache, d_out)

            out, _ = forward()
            diff = float(np.abs(out - ref_out).max())
            repeats = max(1, args.repeats // 5) if name == "numpy" else args.repeats
            f_ms = 1e3 * _time(forward, repeats)
            t_ms = 1e3 * _time(train_step, repeats)
            print(f"{name:>8} {f_ms:11.2f} {t_ms:11.2f} {diff:20.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
