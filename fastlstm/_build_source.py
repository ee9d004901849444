"""The fingerprint of the sources that the compiled kernels are built from.

``setup.py`` compiles :func:`source_hash` of the checkout into ``fastlstm._recurrent``
(``_recurrent.source_hash()``); :func:`build_state` compares it with the checkout's sources
now. A kernel edited, or a compile flag changed in ``setup.py``, without a rebuild, or a
``.so`` copied in from another build, then shows as stale: timings and test results of a
stale extension describe other code than the tree they are filed under. Standard library
only, so that ``setup.py`` can load this file before anything is built.
"""

import glob
import hashlib
import os

#: What ``fastlstm._recurrent`` is compiled from, relative to the project root: its
#: sources and the build script (its compile flags).
SOURCE_PATTERNS = ("setup.py", "src_cy/_recurrent.pyx", "src_cy/*.pxi", "src_cy/*.h")


def source_files(root):
    """The files of ``SOURCE_PATTERNS`` under ``root``, relative, sorted."""
    found = set()
    for pattern in SOURCE_PATTERNS:
        found.update(os.path.relpath(p, root) for p in glob.glob(os.path.join(root, pattern)))
    return sorted(p.replace(os.sep, "/") for p in found)


def source_hash(root):
    """A 16-hex-digit SHA-256 of the names and contents of :func:`source_files`, or None
    where ``root`` has none of them (an installed package, away from its checkout)."""
    files = source_files(root)
    if not files:
        return None
    digest = hashlib.sha256()
    for name in files:
        with open(os.path.join(root, name), "rb") as fh:
            content = fh.read()
        digest.update(name.encode() + b"\0" + str(len(content)).encode() + b"\0" + content)
    return digest.hexdigest()[:16]


def project_root():
    """The checkout this package sits in (the folder above ``fastlstm/``)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_state(root=None):
    """Whether the loaded kernels were built from the sources in ``root`` (default: this
    package's checkout).

    Returns
    -------
    dict
        ``built``: the hash compiled into ``fastlstm._recurrent`` ("unknown" for a build
        without one, None when it cannot be imported); ``tree``: :func:`source_hash` of
        ``root`` now (None away from a checkout); ``fresh``: True when both are known and
        equal, False when they differ, None when either is unknown.
    """
    try:
        from . import _recurrent
    except ImportError:
        built = None
    else:                    # a build older than the hashes has none: "unknown", stale
        built = getattr(_recurrent, "source_hash", lambda: "unknown")()
    tree = source_hash(project_root() if root is None else root)
    fresh = None if built is None or tree is None else built == tree
    return {"built": built, "tree": tree, "fresh": fresh}
