#!/usr/bin/env bash
# Build fastlstm's kernels with clang and run the test suite on that build.
#
# No clang on this machine: zig's clang comes from PyPI (the `ziglang` wheel) and, as zig
# ships no OpenMP runtime, Intel's (the `intel-openmp` wheel, libiomp5). The build goes
# into a copy of the checkout; the suite runs with the current Python environment (which
# must have the test extra installed), importing fastlstm from that copy.
#
#   bash benchmarks/clang_build_check.sh [pytest arguments]
#
# Expected (README, "CPUs without AVX-512"): everything passes but 4 tests of
# tests/test_gate_math.py, as zig's runtime gives target_clones no CPU features;
# CFLAGS=-mcpu=x86_64_v4 in the environment makes those pass too.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

"$python" -m venv "$tmp/zig"
"$tmp/zig/bin/pip" install -q ziglang intel-openmp
omp_include="$(dirname "$(find "$tmp/zig" -name omp.h | head -n 1)")"
cat > "$tmp/cc" <<EOF
#!/bin/sh
exec "$tmp/zig/bin/python" -m ziglang cc -target x86_64-linux-gnu.2.36 -I"$omp_include" \
    -L"$tmp/zig/lib" -Wl,-rpath,"$tmp/zig/lib" "\$@" -liomp5
EOF
chmod +x "$tmp/cc"

mkdir "$tmp/src"                      # the tracked files, as they are in the checkout
(cd "$repo" && git ls-files -z | xargs -0 cp --parents -t "$tmp/src")
cd "$tmp/src"
rm -f src_cy/*.c fastlstm/*.so
CC="$tmp/cc" LDSHARED="$tmp/cc -shared" "$python" setup.py build_ext --inplace --force \
    > build.log 2>&1 || { tail -n 30 build.log; exit 1; }
PYTHONPATH="$tmp/src" "$python" -c \
    "import fastlstm._recurrent as r; print('clang build:', r.__file__, r.fused_isa())"
PYTHONPATH="$tmp/src" "$python" -m pytest tests -q -p no:cacheprovider "$@"
