"""The documentation: the Sphinx build (warnings are errors), every Python block of the
README and the docs, every script in examples/."""

import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from _helpers import require

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_the_docs_build_without_a_warning(tmp_path):
    for module in ("sphinx", "numpydoc", "myst_parser"):
        require(module)
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b",
                             "html", "-q", str(ROOT / "docs"), str(tmp_path / "html")],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    api = (tmp_path / "html" / "api.html").read_text()
    assert "learning_rate_schedule" in api and "from_long_frame" in api   # autodoc ran


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_python_block_runs(page, tmp_path, monkeypatch):
    """The blocks of a page, in order, in one namespace, in an empty folder."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, block in enumerate(blocks):
            exec(compile(block, f"{page.name}, block {k + 1}", "exec"), namespace)


def test_there_are_examples_and_pages():
    assert len(EXAMPLES) >= 2 and len(PAGES) >= 6


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_examples_run(script, capsys):
    require("aeon")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        namespace = runpy.run_path(str(script))
        accuracy = namespace["main"]()
    assert 0.0 <= accuracy <= 1.0
    assert "test accuracy" in capsys.readouterr().out
