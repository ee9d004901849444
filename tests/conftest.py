"""pytest set-up: makes tests/_helpers.py importable from every test module."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
