"""The one error of the config layer."""

from __future__ import annotations


class ParamsError(ValueError):
    """params.yaml is invalid; the message names the key and what was expected."""
