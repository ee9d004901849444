"""Sphinx configuration: the Markdown pages (MyST) and an API reference generated from the
numpydoc docstrings. Built with warnings as errors by tests/test_docs.py:

    python -m sphinx -W -b html docs docs/_build
"""

project = "fastlstm"
author = "the fastlstm developers"
extensions = ["myst_parser", "sphinx.ext.autodoc", "numpydoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build"]
myst_heading_anchors = 3
numpydoc_show_class_members = False
autodoc_member_order = "bysource"
html_theme = "alabaster"
