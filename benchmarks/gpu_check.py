"""One command for a machine with an NVIDIA GPU: device, agreement, regimes, timings.

1. The device and its limits, and the plan (regime, tiles) of every configuration.
2. Agreement: the ``"cuda"`` backend against the NumPy reference (outputs, states, every
   gradient; three cells, variable lengths with 0) with each regime forced in turn, on
   many blocks; every regime and a repeat give the same bits.
3. The device-resident LSTM layer (``fastlstm.backends.cuda_layer``: input projection,
   recurrence, gradients, no host copies) against the reference.
4. Timings, CUDA events, medians: the device layer against ``torch.nn.LSTM`` on cuDNN,
   inputs on the device on both sides; inference, and training (forward + backward with
   the input gradient); cuDNN with TF32 off (the float32 comparison) and on. The
   variable-length batch against cuDNN on packed input.
5. The MNIST model's fit (device-resident epochs) on ``backend="cuda"`` and on the CPU.

    python benchmarks/gpu_check.py [--repeats 20] [--quick] [--smoke]

``--smoke`` runs tiny shapes only (under NUMBA_ENABLE_CUDASIM=1 the tests run it to keep
the script working; timings there mean nothing).
"""

import argparse
import statistics
import sys
import time

import numpy as np

CONFIGS = [(128, 28, 28, 128), (1, 100, 32, 64), (1, 150, 256, 256), (8, 100, 64, 128),
           (32, 100, 64, 64), (16, 150, 256, 256), (64, 25, 512, 512), (64, 50, 512, 512),
           (64, 25, 1024, 1024)]
VARLEN = (64, 100, 64, 128)          # lengths 25..100
SMOKE_CONFIGS = [(3, 4, 2, 5)]
REGIMES = ("block_local", "persistent", "per_step")


def cuda_median_ms(fn, repeats):
    """Median of ``repeats`` CUDA-event timings of ``fn`` (after two warm-up calls)."""
    from numba import cuda
    fn()
    fn()
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def torch_median_ms(fn, repeats):
    import torch
    fn()
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        stop = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def describe_device():
    from numba import cuda
    from fastlstm.backends import cuda_backend as cb
    try:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        print(f"device: {name}, compute capability {dev.compute_capability}")
    except AttributeError:                      # Numba's CUDA simulator
        print("device: Numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1), timings meaningless")
    print(f"limits: {cb.device_limits()}")


def show_plans(configs):
    from fastlstm.backends import cuda_backend as cb
    for B, T, I, H in configs:
        plan = cb.plan_for("lstm", B, H, np.float32)
        print(f"  plan {(B, T, I, H)}: {plan.regime}, tiles {plan.row_tiles} x "
              f"{plan.unit_tiles} of {plan.rows_per_tile} rows x {plan.units_per_tile} units, "
              f"{plan.threads} threads, {plan.shared_bytes} B shared")


def _run(cell, x, lengths, d_out):
    import fastlstm as fl
    out, state, cache = fl.dynamic_rnn(cell, x, lengths, backend="cuda", return_cache=True)
    grads = fl.dynamic_rnn_backward(cell, cache, d_out)
    return [out] + [np.asarray(g) for g in _leaves(grads)]


def _leaves(tree):
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    if isinstance(tree, tuple):
        return [leaf for part in tree for leaf in _leaves(part)]
    return [tree]


def agreement(smoke):
    """Each regime, forced, against the reference; bits equal across regimes and repeats."""
    import fastlstm as fl
    from fastlstm.backends import cuda_backend as cb
    rng = np.random.default_rng(0)
    B, T, H = (5, 4, 3) if smoke else (37, 20, 64)
    cells = (fl.BasicLSTMCell(H, 8, random_state=0),
             fl.LSTMCell(H, 8, use_peepholes=True, cell_clip=2.0, random_state=1),
             fl.BasicRNNCell(H, 8, random_state=2), fl.GRUCell(H, 8, random_state=3),
             fl.GRUCell(H, 8, reset_after=True, random_state=4))
    tiles = {"block_local": dict(rows_per_tile=2 if smoke else 8),
             "persistent": dict(rows_per_tile=2 if smoke else 16, units_per_tile=2 if smoke
                                else 8),
             "per_step": dict(rows_per_tile=3 if smoke else 8, units_per_tile=2 if smoke
                              else 16)}
    ok = True
    for cell in cells:
        x = rng.standard_normal((B, T, cell.input_size)).astype(np.float32)
        lengths = rng.integers(0, T + 1, B)
        lengths[0], lengths[1] = T, 0
        d_out = rng.standard_normal((B, T, H)).astype(np.float32)
        out, _, cache = fl.dynamic_rnn(cell, x, lengths, backend="numpy", return_cache=True)
        ref = [out] + [np.asarray(g) for g in _leaves(fl.dynamic_rnn_backward(cell, cache,
                                                                                d_out))]
        bits = {}
        for regime in REGIMES:
            with cb.forced_plan(regime=regime, **tiles[regime]):
                got = _run(cell, x, lengths, d_out)
                again = _run(cell, x, lengths, d_out)
            bits[regime] = got
            err = max(float(np.max(np.abs(g - r) / (1e-4 + np.abs(r)), initial=0))
                      for g, r in zip(got, ref))
            repeat = all(np.array_equal(a, b) for a, b in zip(got, again))
            good = err < 1e-2 and repeat
            ok &= good
            print(f"  {type(cell).__name__:>13} {regime:>11}: max rel diff {err:.1e}, "
                  f"repeat {'bit-identical' if repeat else 'DIFFERS'} -> "
                  f"{'OK' if good else 'MISMATCH'}")
        same = all(np.array_equal(a, b) for r in REGIMES[1:]
                   for a, b in zip(bits[r], bits[REGIMES[0]]))
        ok &= same
        print(f"  {type(cell).__name__:>13} regimes bit-identical: {same}")
    return ok


def layer_agreement(smoke):
    """The device-resident layers against the reference (float32; the LSTM with
    peepholes and clip, the GRU with reset_after, the basic RNN)."""
    from numba import cuda
    import fastlstm as fl
    from fastlstm.backends import cuda_layer as layer
    rng = np.random.default_rng(1)
    B, T, I, H = (4, 3, 2, 3) if smoke else (33, 17, 20, 48)
    ok = True
    for cell in (fl.LSTMCell(H, I, use_peepholes=True, cell_clip=1.5, random_state=0),
                 fl.GRUCell(H, I, reset_after=True, random_state=1),
                 fl.BasicRNNCell(H, I, random_state=2)):
        x = rng.standard_normal((T, B, I)).astype(np.float32)
        lengths = rng.integers(0, T + 1, B)
        h0, c0 = (rng.standard_normal((B, H)).astype(np.float32) for _ in range(2))
        d_out = rng.standard_normal((T, B, H)).astype(np.float32)
        lstm = cell.kind == "lstm"
        state = fl.LSTMStateTuple(c0, h0) if lstm else h0
        out, final, cache = fl.dynamic_rnn(cell, x, lengths, state, time_major=True,
                                           backend="numpy", return_cache=True)
        ref = fl.dynamic_rnn_backward(cell, cache, d_out, input_gradient=True)
        p = layer.to_device_params(cell)
        args = (cuda.to_device(x), cuda.to_device(lengths), cuda.to_device(h0))
        weights = (p["kernel"], p["recurrent_kernel"], p["bias"])
        if lstm:
            fwd = layer.lstm_forward(*args, cuda.to_device(c0), *weights, p["peepholes"],
                                     cell.forget_bias, cell.cell_clip, training=True)
        elif cell.kind == "gru":
            fwd = layer.gru_forward(*args, *weights, p["recurrent_bias"], training=True)
        else:
            fwd = layer.rnn_forward(*args, *weights, training=True)
        backward = getattr(layer, f"{cell.kind}_backward")
        grads = backward(fwd, p["kernel"], p["recurrent_kernel"], cuda.to_device(d_out))
        pairs = [(fwd.outputs, out), (fwd.h, final.h if lstm else final),
                 (grads["inputs"], ref["inputs"])]
        pairs += [(grads[k], ref[k]) for k in cell.params]
        err = max(float(np.max(np.abs(d.copy_to_host() - r) / (1e-4 + np.abs(r))))
                  for d, r in pairs)
        good = err < 1e-2
        ok &= good
        print(f"  device layer {type(cell).__name__:>12}: max rel diff {err:.1e} -> "
              f"{'OK' if good else 'MISMATCH'}")
    return ok


def timings(configs, repeats, varlen):
    from numba import cuda
    import fastlstm as fl
    from fastlstm.backends import cuda_layer as layer
    try:
        import torch
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    print(f"{'config':>26} {'mode':>6} {'fastlstm ms':>11} {'cuDNN ms':>9} {'ratio':>6} "
          f"{'cuDNN tf32':>10} {'ratio':>6}")
    rows = [(c, None) for c in configs] + ([(VARLEN, "varlen")] if varlen else [])
    for (B, T, I, H), kind in rows:
        rng = np.random.default_rng(0)
        cell = fl.BasicLSTMCell(H, I, forget_bias=0.0, random_state=0)
        x_host = rng.standard_normal((T, B, I)).astype(np.float32)
        lengths = (np.full(B, T) if kind is None else
                   np.sort(rng.integers(T // 4, T + 1, B))[::-1].copy())
        p = layer.to_device_params(cell)
        x, seq = cuda.to_device(x_host), cuda.to_device(lengths)
        zeros = cuda.to_device(np.zeros((B, H), np.float32))
        d_out = cuda.to_device(np.ones((T, B, H), np.float32))

        def infer():
            layer.lstm_forward(x, seq, zeros, zeros, p["kernel"], p["recurrent_kernel"],
                               p["bias"], forget_bias=0.0)

        def train():
            fwd = layer.lstm_forward(x, seq, zeros, zeros, p["kernel"], p["recurrent_kernel"],
                                     p["bias"], forget_bias=0.0, training=True)
            layer.lstm_backward(fwd, p["kernel"], p["recurrent_kernel"], d_out)

        for mode, fn in (("infer", infer), ("train", train)):
            ours = cuda_median_ms(fn, repeats)
            theirs = {}
            if have_torch:
                lstm = torch.nn.LSTM(I, H).cuda()
                xt = torch.from_numpy(x_host).cuda()
                lt = torch.from_numpy(lengths)

                def torch_fn():
                    xin = xt if mode == "infer" else xt.detach().requires_grad_()
                    if kind == "varlen":
                        xin = torch.nn.utils.rnn.pack_padded_sequence(xin, lt)
                    with torch.set_grad_enabled(mode == "train"):
                        out = lstm(xin)[0]
                        if mode == "train":
                            out = out.data if kind == "varlen" else out
                            out.backward(torch.ones_like(out))

                for tf32 in (False, True):
                    torch.backends.cudnn.allow_tf32 = tf32
                    torch.backends.cuda.matmul.allow_tf32 = tf32
                    theirs[tf32] = torch_median_ms(torch_fn, repeats)
            t0, t1 = theirs.get(False, float("nan")), theirs.get(True, float("nan"))
            name = f"{(B, T, I, H)}" + (" 25-100" if kind else "")
            ours = ours or float("nan")            # the simulator's events read 0
            print(f"{name:>26} {mode:>6} {ours:11.3f} {t0:9.3f} {t0 / ours:6.2f} "
                  f"{t1:10.3f} {t1 / ours:6.2f}", flush=True)


def gemm_rate(smoke, repeats):
    """The device GEMM's float32 rate (the layer's projection and weight-gradient shapes)
    beside torch.matmul with TF32 off."""
    from numba import cuda
    from fastlstm.backends._cuda_gemm import matmul
    try:
        import torch
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    shapes = [(8, 4, 6, False)] if smoke else [(1600, 1024, 4096, False),
                                               (1024, 1600, 4096, True),
                                               (3200, 128, 512, False)]
    rng = np.random.default_rng(0)
    for M, K, N, trans_a in shapes:
        a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(np.float32)
        b = rng.standard_normal((K, N)).astype(np.float32)
        da, db = cuda.to_device(a), cuda.to_device(b)
        dc = cuda.device_array((M, N), np.float32)
        ms = cuda_median_ms(lambda: matmul(da, db, dc, trans_a=trans_a), repeats)
        line = f"  gemm {M}x{K}x{N}{' (A^T)' if trans_a else ''}: {ms:.3f} ms"
        if ms:
            line += f", {2 * M * N * K / ms / 1e6:.0f} GFLOP/s"
        if have_torch:
            torch.backends.cuda.matmul.allow_tf32 = False
            ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
            ms_t = torch_median_ms(lambda: (ta.T if trans_a else ta) @ tb, repeats)
            line += f"; torch (no TF32) {ms_t:.3f} ms: ours at {ms_t / ms:.2f} of its rate"
        print(line)


def fit_comparison(smoke):
    """The MNIST demo's model (no augmentation: a host callable keeps a fit on the host
    loop) fitted on the GPU and on the CPU: seconds per epoch, accuracy. The digits
    stand in where MNIST's package is not installed (and in --smoke)."""
    import fastlstm as fl
    from sklearn.model_selection import train_test_split
    params = dict(input_projection=128, hidden_size=128, forget_bias=1.0,
                  learning_rate=1e-3, batch_size=128, max_iter=3)
    try:
        if smoke:
            raise ImportError("smoke run")
        X, y = fl.datasets.load_mnist_rows()
        name = "MNIST rows (4,000 / 1,000)"
    except ImportError:
        X, y = fl.datasets.load_digits_rows()
        name = "digits rows"
        params.update(hidden_size=64, input_projection=None, learning_rate=1e-2,
                      batch_size=64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=4000 if len(X) > 5000 else 0.75,
                                          test_size=1000 if len(X) > 5000 else 0.25,
                                          stratify=y, random_state=0)
    if smoke:
        Xtr, ytr = Xtr[:12], ytr[:12]
        params.update(hidden_size=8, max_iter=1)
    for backend in ("cuda", "auto"):
        clf = fl.LSTMClassifier(backend=backend, random_state=0, **params)
        t0 = time.perf_counter()
        clf.fit(Xtr, ytr)
        seconds = (time.perf_counter() - t0) / clf.n_iter_
        print(f"  {name} fit on {clf.backend_:>6}: {seconds:.2f} s/epoch, test accuracy "
              f"{clf.score(Xte, yte):.3f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--quick", action="store_true", help="only the first three configs")
    p.add_argument("--smoke", action="store_true", help="tiny shapes: the script runs")
    args = p.parse_args(argv)
    from numba import cuda
    if not cuda.is_available():
        print("no CUDA GPU visible to numba.cuda")
        return 1
    describe_device()
    configs = SMOKE_CONFIGS if args.smoke else CONFIGS[:3] if args.quick else CONFIGS
    show_plans(configs)
    print("agreement (every regime forced; repeats):")
    ok = agreement(args.smoke)
    ok &= layer_agreement(args.smoke)
    print("device GEMM (CUDA events, medians):")
    gemm_rate(args.smoke, 2 if args.smoke else args.repeats)
    print("timings (CUDA events, medians):")
    timings(configs, 2 if args.smoke else args.repeats, varlen=not args.smoke)
    print("fit:")
    fit_comparison(args.smoke)
    print("gpu_check: " + ("all agreement checks passed" if ok else "AGREEMENT FAILED"))
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
