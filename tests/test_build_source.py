"""The source fingerprint compiled into the kernels (fastlstm/_build_source.py): a test run
or a benchmark of kernels built from other sources than the tree's is told apart."""

import shutil

import pytest

from fastlstm import _build_source, _recurrent


def test_the_loaded_kernels_were_built_from_this_tree():
    state = _build_source.build_state()
    if state["tree"] is None:
        pytest.skip("fastlstm is installed away from its checkout: no sources to compare")
    assert state["fresh"], (f"the kernels were built from sources {state['built']}, the "
                            f"tree's are {state['tree']}: rebuild them (pip install -e . or "
                            f"python setup.py build_ext --inplace)")


def _tree(root):
    (root / "src_cy").mkdir(parents=True)
    (root / "setup.py").write_text("flags = ['-O3']\n")
    (root / "src_cy" / "_recurrent.pyx").write_text("include 'a.pxi'\n")
    (root / "src_cy" / "a.pxi").write_text("# kernels\n")
    (root / "src_cy" / "b.h").write_text("/* tiles */\n")
    (root / "src_cy" / "_recurrent.c").write_text("/* generated */\n")
    return root


def test_the_hash_follows_each_source_and_the_build_script(tmp_path):
    root = _tree(tmp_path / "a")
    assert _build_source.source_files(root) == [
        "setup.py", "src_cy/_recurrent.pyx", "src_cy/a.pxi", "src_cy/b.h"]
    first = _build_source.source_hash(root)
    assert len(first) == 16 and first == _build_source.source_hash(shutil.copytree(
        root, tmp_path / "copy"))
    (root / "src_cy" / "_recurrent.c").write_text("/* generated again */\n")
    assert _build_source.source_hash(root) == first        # Cython's output is not a source
    seen = {first}
    for name, text in (("setup.py", "flags = ['-O3', '-fno-trapping-math']\n"),
                       ("src_cy/b.h", "/* tiles, faster */\n"), ("src_cy/c.h", "")):
        (root / name).write_text(text)
        digest = _build_source.source_hash(root)
        assert digest not in seen, name
        seen.add(digest)
    (root / "src_cy" / "c.h").rename(root / "src_cy" / "d.h")   # a name is part of it
    assert _build_source.source_hash(root) not in seen
    assert _build_source.source_hash(tmp_path / "empty") is None


def test_kernels_from_other_sources_are_stale(tmp_path, monkeypatch):
    root = _tree(tmp_path)
    built = _build_source.source_hash(root)                 # "compiled" now
    monkeypatch.setattr(_recurrent, "source_hash", lambda: built, raising=False)
    assert _build_source.build_state(root) == {"built": built, "tree": built, "fresh": True}
    (root / "src_cy" / "a.pxi").write_text("# kernels, edited after the build\n")
    state = _build_source.build_state(root)
    assert state["fresh"] is False and state["built"] != state["tree"]
    assert _build_source.build_state(tmp_path / "elsewhere")["fresh"] is None
