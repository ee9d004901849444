#!/usr/bin/env bash
# Every run that the table "Where each CPU kind stands" (docs/benchmarks.md) reads, on the
# CPU at hand, one after another, each JSON named by the CPU kind, the commit and the
# date under benchmarks/results/ (git add -f them; the folder is ignored).
#
#   bash benchmarks/run_cpu_kind.sh [step ...]
#
# Steps (all by default, in this order; about 1.5-2 hours on 2 cores, most of it the
# bfloat16 accuracy):
#   f32          bench_kernels.py, Cython and Numba backends, float32
#   bf16         bench_kernels.py --compute-dtype bfloat16 (skipped without AVX512-BF16)
#   contention   bench_contention.py --numba (default threads against one, 0-2 busy)
#   first_calls  bench_first_calls.py (median of 5 fresh processes per call)
#   fit          bench_fit.py (the MNIST fit against skorch)
#   bf16_accuracy  bf16_accuracy.py (skipped without AVX512-BF16)
#
# Run it with nothing else running: every benchmark here times this machine's cores. The
# OpenBLAS variables of this workplace are unset for the benchmarks alone (they slow
# OpenBLAS a lot). The active Python environment must have the bench, demo and export
# extras (pip install -e ".[bench,demo,export]").
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python}"

kind="$(awk -F': *' '
    /^vendor_id/ && !v {v = ($2 ~ /AMD/) ? "amd" : ($2 ~ /Intel/) ? "intel" : tolower($2)}
    /^cpu family/ && !f {f = $2}
    /^model[ \t]*:/ && !m {m = $2}
    END {if (v == "") v = "cpu"; printf "%s_f%s_m%s", v, f, m}' /proc/cpuinfo 2>/dev/null \
    || uname -m)"
tag="${kind}_$(git rev-parse --short HEAD)_$(date +%F)"
# the JSONs are filed under this commit: its kernels must be the ones that run
"$python" -c "import sys; from fastlstm._build_source import build_state as s; b = s(); \
sys.exit(0 if b['fresh'] else 'the kernels were not built from this tree (%s, tree %s): '
'rebuild with python setup.py build_ext --inplace' % (b['built'], b['tree']))"
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "note: the tree has uncommitted changes; the JSONs are named by HEAD"
fi
out="benchmarks/results"
bf16=0
grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && bf16=1

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(f32 bf16 contention first_calls fit bf16_accuracy)

bench() {
    echo "== $* ($(date +%T))"
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$python" "$@"
}

for step in "${steps[@]}"; do
    case "$step" in
        f32) bench benchmarks/bench_kernels.py --backends cython,numba \
                 --json "$out/${tag}_f32.json" ;;
        bf16)
            if [ "$bf16" = 1 ]; then
                bench benchmarks/bench_kernels.py --compute-dtype bfloat16 \
                    --json "$out/${tag}_bf16.json"
            else
                echo "== bf16: skipped, this CPU has no AVX512-BF16"
            fi ;;
        contention) bench benchmarks/bench_contention.py --numba \
                        --json "$out/${tag}_contention.json" ;;
        first_calls) bench benchmarks/bench_first_calls.py \
                         --json "$out/${tag}_first_calls.json" ;;
        fit) bench benchmarks/bench_fit.py --json "$out/${tag}_fit.json" ;;
        bf16_accuracy)
            if [ "$bf16" = 1 ]; then
                bench benchmarks/bf16_accuracy.py --json "$out/${tag}_bf16_accuracy.json"
            else
                echo "== bf16_accuracy: skipped, this CPU has no AVX512-BF16"
            fi ;;
        *) echo "unknown step '$step' (f32 bf16 contention first_calls fit bf16_accuracy)" >&2
           exit 2 ;;
    esac
done
echo "== done ($(date +%T)): $out/${tag}_*.json"
