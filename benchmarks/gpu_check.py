"""One short check for a machine with an NVIDIA GPU: device, agreement, timings.

1. Prints the device numba.cuda sees.
2. Checks the "cuda" backend against the NumPy reference (outputs, states, every
   gradient) at float32 tolerances on a few shapes, variable lengths included.
3. Times the speed issue's configurations (forward, forward + backward) against
   torch.nn.LSTM on the GPU (cuDNN) when torch with CUDA is installed, and how much of
   a call is copying between host and device (the backend's kernel contract works on
   host arrays: every call copies its inputs in and its outputs back).

    python benchmarks/gpu_check.py [--repeats 5] [--quick]
"""

import argparse
import statistics
import sys
import time

import numpy as np

CONFIGS = [(128, 28, 28, 128), (1, 100, 32, 64), (1, 150, 256, 256), (8, 100, 64, 128),
           (32, 100, 64, 64), (16, 150, 256, 256), (64, 25, 512, 512), (64, 50, 512, 512),
           (64, 25, 1024, 1024)]


def median_time(fn, repeats, sync=lambda: None):
    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def transfer_time(fn):
    """Seconds of one ``fn()`` spent in the cuda backend's host <-> device copies."""
    from numba import cuda
    from fastlstm.backends import cuda_backend as cb
    spent = [0.0]
    originals = cb._to_device, cb._to_host

    def timed(copy):
        def run(*args):
            cuda.synchronize()
            t0 = time.perf_counter()
            out = copy(*args)
            cuda.synchronize()
            spent[0] += time.perf_counter() - t0
            return out
        return run

    cb._to_device, cb._to_host = (timed(c) for c in originals)
    try:
        fn()
    finally:
        cb._to_device, cb._to_host = originals
    return spent[0]


def agreement():
    import fastlstm as fl
    rng = np.random.default_rng(0)
    ok = True
    for cell in (fl.BasicLSTMCell(64, 16, random_state=0),
                 fl.LSTMCell(48, 8, use_peepholes=True, cell_clip=2.0, random_state=1),
                 fl.BasicRNNCell(32, 8, random_state=2)):
        x = rng.standard_normal((37, 20, cell.input_size)).astype(np.float32)
        lengths = rng.integers(0, 21, 37)
        d_out = rng.standard_normal((37, 20, cell.num_units)).astype(np.float32)
        res = {}
        for be in ("numpy", "cuda"):
            out, state, cache = fl.dynamic_rnn(cell, x, lengths, backend=be, return_cache=True)
            res[be] = (out, fl.dynamic_rnn_backward(cell, cache, d_out))
        err = max(float(np.max(np.abs(np.asarray(res["cuda"][1][k]) -
                                      np.asarray(res["numpy"][1][k]))
                               / (1e-5 + np.abs(np.asarray(res["numpy"][1][k])))))
                  for k in res["numpy"][1])
        out_err = float(np.max(np.abs(res["cuda"][0] - res["numpy"][0])))
        good = out_err < 1e-4 and err < 1e-2
        ok &= good
        print(f"{type(cell).__name__:>13}: max |out diff| {out_err:.2e}, max rel grad diff "
              f"{err:.2e} -> {'OK' if good else 'MISMATCH'}")
    return ok


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="only the first three configs")
    args = p.parse_args(argv)
    from numba import cuda
    if not cuda.is_available():
        print("no CUDA GPU visible to numba.cuda")
        return 1
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        print(f"device: {name}, compute capability {dev.compute_capability}")
    except AttributeError:                      # Numba's CUDA simulator
        print("device: Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), timings meaningless")
    ok = agreement()
    import fastlstm as fl
    try:
        import torch
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    print(f"{'config':>22} {'mode':>6} {'fastlstm ms':>12} {'copies ms':>10} {'torch ms':>9} "
          f"{'torch/fl':>8}")
    for B, T, I, H in CONFIGS[:3] if args.quick else CONFIGS:
        cell = fl.BasicLSTMCell(H, I, random_state=0)
        x = np.random.default_rng(0).standard_normal((B, T, I)).astype(np.float32)
        d_out = np.ones((B, T, H), np.float32)

        def infer():
            fl.dynamic_rnn(cell, x, backend="cuda")

        def train():
            _, _, c = fl.dynamic_rnn(cell, x, backend="cuda", return_cache=True)
            fl.dynamic_rnn_backward(cell, c, d_out)

        for mode, fn in (("infer", infer), ("train", train)):
            t_fl = median_time(fn, args.repeats)
            t_copy = transfer_time(fn)
            t_torch = float("nan")
            if have_torch:
                lstm = torch.nn.LSTM(I, H, batch_first=True).cuda()
                xt = torch.from_numpy(x).cuda()

                def torch_fn():
                    if mode == "infer":
                        with torch.no_grad():
                            lstm(xt)
                    else:
                        xg = xt.detach().requires_grad_()
                        lstm(xg)[0].sum().backward()

                t_torch = median_time(torch_fn, args.repeats, torch.cuda.synchronize)
            print(f"{str((B, T, I, H)):>22} {mode:>6} {1e3 * t_fl:12.2f} {1e3 * t_copy:10.2f} "
                  f"{1e3 * t_torch:9.2f} {t_torch / t_fl:8.2f}", flush=True)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
