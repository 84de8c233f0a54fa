"""Logging, configured once per stage job: what a stage logs lands in its log.

Snakemake writes a job's stdout and stderr to `logs/<dataset>/.../<stage>.log`; DVC shows them
on the terminal. unetflow's records go there: info to stdout as the bare message, warnings and
errors to stderr as `warning: message`. `UNETFLOW_LOG_LEVEL` (debug, info, warning) sets how
much; records of other libraries are left to their own defaults.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER = "unetflow"
LEVEL_VARIABLE = "UNETFLOW_LOG_LEVEL"


class _StandardStream(logging.StreamHandler):
    """A handler that writes to sys.stdout or sys.stderr as they are when a record comes (a
    test's capture, or the job's files), not as they were when logging was configured."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._stream_name = name

    @property
    def stream(self):  # noqa: ANN201 (the StreamHandler attribute)
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value: object) -> None:
        """Ignored: the stream is looked up at each record."""


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


class _LevelPrefix(logging.Formatter):
    """`warning: message`, in the lower case of the stages' `error: message` lines."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.levelname.lower()}: {super().format(record)}"


def configure_logging() -> logging.Logger:
    """Route the `unetflow` loggers to stdout (info) and stderr (warnings); idempotent."""
    logger = logging.getLogger(LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    info = _StandardStream("stdout")
    info.addFilter(_BelowWarning())
    info.setFormatter(logging.Formatter("%(message)s"))
    warnings = _StandardStream("stderr")
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(_LevelPrefix("%(message)s"))
    logger.addHandler(info)
    logger.addHandler(warnings)
    logger.setLevel(os.environ.get(LEVEL_VARIABLE, "info").upper())
    logger.propagate = False
    return logger
