"""fastlstm on a dask LocalCluster: prediction throughput with 1 and 2 workers, and an
out-of-core partial_fit over data several times a worker's memory limit.

1. Predict: the MNIST row-LSTM's shape (28 steps of 28 features, a projection to 128, an
   LSTM of 128 units, 10 classes) over a 3-D dask array of ``--n`` sequences held in the
   workers' memory (persisted first, so the time is the model's, not the data's
   generation), with 1 and then 2 single-threaded workers, side by side with the same
   model predicting in this process on 1 and 2 threads.
2. Out of core: ``fastlstm.dask.partial_fit`` over ``--fit-n`` sequences generated block
   by block on one worker whose memory limit is ``--memory-limit``: the data is never
   whole anywhere; the run reports the worker's peak memory and that it never restarted.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_dask.py

The machine's CPU, the versions and every number go to ``--json``.
"""

import argparse
import os
import statistics
import time
import warnings

import numpy as np

import fastlstm as fl

from _machine import cpu_name, write_json

T, F, CLASSES = 28, 28, 10


def mnist_shaped_model():
    """The demo's architecture, fitted for one epoch on random data (the throughput does
    not depend on the weights)."""
    rng = np.random.RandomState(0)
    X = rng.rand(2000, T, F).astype(np.float32)
    y = rng.randint(0, CLASSES, 2000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fl.LSTMClassifier(hidden_size=128, input_projection=128, max_iter=1,
                                 random_state=0).fit(X, y)


def random_blocks(da, n, chunk, seed):
    """A lazy (n, T, F) float32 dask array whose blocks are generated where computed."""
    return da.random.default_rng(seed).random((n, T, F), dtype=np.float32,
                                              chunks=(chunk, T, F))


def time_it(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def predict_throughput(args, model):
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    from fastlstm import dask as fld

    import dask

    results = {}
    local_X = random_blocks(da, args.local_n, args.chunk, 1).compute()
    for threads in (1, 2):
        model.set_params(n_jobs=threads)              # the estimator's own thread count
        t = time_it(lambda: model.predict_proba(local_X), args.repeats)
        results[f"in-process, {threads} thread(s)"] = args.local_n / t
    model.set_params(n_jobs=None)
    # dask's Nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536 (glibc returns freed
    # memory to the OS at once, so the next batch's arrays fault their pages in again);
    # measured with it and with it raised to 256 MB
    for trim in (None, 1 << 28):
        environ = {} if trim is None else {
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": trim}
        label = "" if trim is None else ", MALLOC_TRIM_THRESHOLD_=256MB"
        for workers in (1, 2):
            with dask.config.set(environ), \
                    LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                 dashboard_address=None, memory_limit=0) as cluster, \
                    Client(cluster):
                X = random_blocks(da, args.n, args.chunk, 2).persist()
                wait(X)
                fld.predict_proba(model, X).compute()         # warm the workers
                # a new graph (fresh keys) each time: nothing computed before is reused
                t = time_it(lambda: fld.predict_proba(model, X).compute(), args.repeats)
                results[f"dask, {workers} worker(s) x 1 thread{label}"] = args.n / t
    return results


def out_of_core_fit(args):
    import dask.array as da
    from distributed import Client, LocalCluster

    from fastlstm import dask as fld

    X = random_blocks(da, args.fit_n, args.chunk, 3)
    y = da.random.RandomState(4).randint(0, CLASSES, args.fit_n, chunks=args.chunk)
    model = fl.LSTMClassifier(hidden_size=128, input_projection=128, random_state=0)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit=args.memory_limit) as cluster, \
            Client(cluster) as client:
        before = client.run(os.getpid)
        t0 = time.perf_counter()
        fld.partial_fit(model, X, y, classes=np.arange(CLASSES))
        seconds = time.perf_counter() - t0
        after = client.run(os.getpid)

        def peak_mb():
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        peak = list(client.run(peak_mb).values())[0]
    return dict(sequences=args.fit_n, data_mb=X.nbytes / 2 ** 20,
                memory_limit=args.memory_limit, seconds=seconds,
                sequences_per_second=args.fit_n / seconds, worker_peak_rss_mb=peak,
                worker_restarted=before != after, epochs_done=model.n_iter_)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="sequences to predict")
    p.add_argument("--local-n", type=int, default=20_000,
                   help="sequences for the in-process baseline")
    p.add_argument("--chunk", type=int, default=5_000, help="sequences per block")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fit-n", type=int, default=600_000,
                   help="sequences for the out-of-core partial_fit")
    p.add_argument("--memory-limit", default="600MB")
    p.add_argument("--no-fit", action="store_true", help="the predictions only")
    p.add_argument("--json", default="benchmarks/results/bench_dask.json")
    args = p.parse_args(argv)

    import dask
    import distributed
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cpus; fastlstm {fl.__version__}, dask "
          f"{dask.__version__}, distributed {distributed.__version__}")
    model = mnist_shaped_model()
    rates = predict_throughput(args, model)
    print(f"\npredict_proba, {args.n:,} MNIST-shaped sequences in blocks of {args.chunk:,} "
          f"(in-process rows: {args.local_n:,}), sequences/s:")
    for name, rate in rates.items():
        print(f"  {name:58s} {rate:12,.0f}")
    speedup = rates["dask, 2 worker(s) x 1 thread"] / rates["dask, 1 worker(s) x 1 thread"]
    print(f"  2 workers / 1 worker: {speedup:.2f}x")
    fit = None if args.no_fit else out_of_core_fit(args)
    if fit:
        print(f"\npartial_fit over {fit['sequences']:,} sequences ({fit['data_mb']:,.0f} "
              f"MB, generated block by block) on one worker limited to "
              f"{fit['memory_limit']}: "
              f"{fit['seconds']:.1f} s ({fit['sequences_per_second']:,.0f} sequences/s), "
              f"worker peak RSS {fit['worker_peak_rss_mb']:.0f} MB, restarted: "
              f"{fit['worker_restarted']}")
    result = dict(date=time.strftime("%Y-%m-%d %H:%M"), cpu=cpu_name(),
                  cpus=os.cpu_count(), dask=dask.__version__,
                  distributed=distributed.__version__, predict=rates,
                  speedup_2_workers=speedup, out_of_core_fit=fit, args=vars(args))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
