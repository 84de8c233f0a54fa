"""The reliability battery: each test starts from a working pipeline and breaks one thing.

The helpers of tests/project.py (a throw-away project copy, the engines' runner) serve here too.
"""

from __future__ import annotations
