"""The reliability battery: each test starts from a working pipeline and breaks one thing.

The helpers of tests/project.py (a throw-away project copy, the engines' runner) serve here too.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
