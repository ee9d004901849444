"""Test accuracy of the demo's models trained with bfloat16 products against float32.

For each data set (the MNIST demo and UEA JapaneseVowels, their documented
configurations of ``python -m fastlstm demo``) and model seeds 0-3: one training with
``compute_dtype=None`` (float32 products) and one with ``"bfloat16"``, the same data,
epochs and seed. Prints each accuracy, the mean over the seeds and the difference of the
means in points (the target: within 0.5); writes them with the CPU's name to JSON.

Usage: ``python benchmarks/bf16_accuracy.py [--datasets mnist,japanese-vowels]``
(the ``demo`` extra provides the data).
"""
import argparse
import os
import statistics
import sys
import time

from fastlstm.demo import run

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _machine import cpu_name, write_json  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", default="mnist,japanese-vowels")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default="benchmarks/results/bf16_accuracy.json")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus")
    runs, summary = [], {}
    for dataset in args.datasets.split(","):
        acc = {}
        for compute_dtype in (None, "bfloat16"):
            for seed in seeds:
                r = run(dataset, threads=args.threads, random_state=seed,
                        compute_dtype=compute_dtype, out=lambda *a: None)
                name = compute_dtype or "float32"
                acc.setdefault(name, []).append(r["test_accuracy"])
                runs.append(dict(dataset=dataset, compute_dtype=name, seed=seed,
                                 test_accuracy=r["test_accuracy"],
                                 fit_seconds=r["fit_seconds"], backend=r["backend"]))
                print(f"{dataset:>16} {name:>9} seed {seed}: accuracy "
                      f"{r['test_accuracy']:.4f}, fit {r['fit_seconds']:.1f} s", flush=True)
        means = {k: statistics.mean(v) for k, v in acc.items()}
        summary[dataset] = dict(means, difference_points=100 * (means["bfloat16"]
                                                                  - means["float32"]))
        print(f"{dataset:>16} mean over seeds {seeds}: float32 {means['float32']:.4f}, "
              f"bfloat16 {means['bfloat16']:.4f}, difference "
              f"{summary[dataset]['difference_points']:+.2f} points", flush=True)
    write_json(args.json, dict(date=time.strftime("%Y-%m-%d %H:%M"), cpu=cpu_name(),
                               seeds=seeds, summary=summary, runs=runs,
                               command=" ".join(sys.argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
