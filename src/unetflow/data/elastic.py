"""Third-party packages whose import can fail for a reason the user must fix in their install."""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
from types import ModuleType

ELASTICDEFORM_FIX = (
    "pip install --force-reinstall --no-deps --no-binary elasticdeform elasticdeform"
)


class InstallError(ImportError):
    """A package is missing or was built for other libraries; the message says how to fix it."""


@functools.cache
def import_elasticdeform() -> ModuleType:
    """elasticdeform, or an InstallError in one line: its PyPI wheels are built against
    numpy 1.x and fail to import under numpy 2 (numpy's own long warning is swallowed)."""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            return importlib.import_module("elasticdeform")
        except ModuleNotFoundError:
            reason = "is not installed (it comes with the `workflow` extra)"
        except (ImportError, AttributeError) as exc:
            reason = f"does not import ({type(exc).__name__}: {exc}), likely a wheel for numpy 1.x"
    raise InstallError(f"elasticdeform {reason}; install it with: {ELASTICDEFORM_FIX}")
