"""The source distribution carries every kernel source (MANIFEST.in, setup.py's depends).

Cython names only the headers of its ``cdef extern`` blocks, and an sdist built without
MANIFEST.in held the generated C files instead of the .pyx: a build from it failed.
"""

import os
import pathlib
import subprocess
import sys
import tarfile

from _helpers import require

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_sdist_carries_every_kernel_source(tmp_path):
    require("Cython")
    env = dict(os.environ, FASTLSTM_CYTHON_BUILD_DIR=str(tmp_path / "cython"))
    run = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
         "sdist", "--dist-dir", str(tmp_path / "dist"), "--formats", "gztar"],
        cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (archive,) = (tmp_path / "dist").glob("*.tar.gz")
    with tarfile.open(archive) as tar:
        names = {pathlib.PurePosixPath(n).relative_to(pathlib.PurePosixPath(n).parts[0])
                 for n in tar.getnames() if len(pathlib.PurePosixPath(n).parts) > 1}
    sources = {pathlib.PurePosixPath("src_cy", p.name) for pattern in ("*.pyx", "*.h")
               for p in (ROOT / "src_cy").glob(pattern)}
    assert sources and sources <= names, sorted(sources - names)
    assert not any(n.suffix == ".c" and n.parts[0] == "src_cy" for n in names)
    assert pathlib.PurePosixPath("setup.py") in names
