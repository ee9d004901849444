"""Build fastlstm's Cython kernels (src_cy/*.pyx -> fastlstm._*).

OpenMP is probed, not assumed: a tiny OpenMP program is compiled and run with the
compiler setuptools will use. It works -> kernels are built with -fopenmp; it fails ->
a serial build with a warning. ``FASTLSTM_NO_OPENMP=1`` forces the serial build.
No ``-march=native``: the wheel must run on any x86-64 CPU.
"""

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from setuptools import Extension, setup

OPENMP_PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n);
    return n >= 1 ? 0 : 1;
}
"""


def _compiler():
    return os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"


def openmp_works(flag="-fopenmp"):
    """Compile, link and run a small OpenMP program; True when all three succeed."""
    tmp = tempfile.mkdtemp(prefix="fastlstm-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as fh:
            fh.write(OPENMP_PROBE)
        subprocess.run([_compiler(), flag, src, "-o", exe], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run([exe], check=True, stdout=subprocess.DEVNULL)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def openmp_flags():
    if os.environ.get("FASTLSTM_NO_OPENMP", "0") not in ("", "0"):
        print("fastlstm: FASTLSTM_NO_OPENMP set, building the kernels serially",
              file=sys.stderr)
        return [], []
    if openmp_works():
        return ["-fopenmp"], ["-fopenmp"]
    print("WARNING fastlstm: the C compiler cannot build OpenMP programs; building the "
          "kernels serially (one thread). Install an OpenMP runtime (libgomp) for threads.",
          file=sys.stderr)
    return [], []


def source_hash():
    """fastlstm/_build_source.py's fingerprint of the kernels' sources and this script,
    loaded by path: nothing of the package can be imported before it is built."""
    root = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "_fastlstm_build_source", os.path.join(root, "fastlstm", "_build_source.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.source_hash(root)


def extensions():
    from Cython.Build import cythonize

    compile_args, link_args = openmp_flags()
    # every header, also those only C includes (Cython names just its `cdef extern`
    # ones): an sdist then carries them all, and editing one rebuilds the kernels
    headers = sorted(glob.glob(os.path.join("src_cy", "*.h"))
                     + glob.glob(os.path.join("src_cy", "*.pxi")))
    ext = Extension(
        "fastlstm._recurrent",
        ["src_cy/_recurrent.pyx"],
        include_dirs=["src_cy"],
        # setup.py: its flags are part of the build (and of the source hash below)
        depends=headers + ["setup.py"],
        # _recurrent.source_hash(): benchmarks and tests tell a stale build from a fresh one
        define_macros=[("FASTLSTM_SOURCE_HASH", f'"{source_hash()}"')],
        # -fno-trapping-math: GCC may then if-convert the gate math's selects (tanh's two
        # branches, the clip) without AVX-512's masks, so its loops vectorize on AVX2 too;
        # it assumes no floating-point traps, and changes no value
        extra_compile_args=["-O3", "-fno-trapping-math"] + compile_args,
        extra_link_args=link_args,
    )
    # -fno-math-errno: sqrt may then be vectorized (errno is never read here)
    update = Extension("fastlstm._update", ["src_cy/_update.pyx"],
                       extra_compile_args=["-O3", "-fno-math-errno"])
    buffers = Extension("fastlstm._buffers", ["src_cy/_buffers.pyx"], extra_compile_args=["-O2"])
    return cythonize([ext, update, buffers], compiler_directives={"language_level": "3"},
                     build_dir=os.environ.get("FASTLSTM_CYTHON_BUILD_DIR"))


setup(ext_modules=extensions())
