"""Exceptions raised by agentic_toolkit.

Every error a user can cause by bad input derives from :class:`ToolkitError`, so a
notebook can catch one type, and each message says what went wrong and how to fix it.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class for all errors raised on bad input."""


class UnknownModelError(ToolkitError, ValueError):
    """A model name that neither timm nor the toolkit knows."""


class DataNotFoundError(ToolkitError, FileNotFoundError):
    """A data set or checkpoint that could not be located."""


class ChecksumError(ToolkitError, ValueError):
    """A file whose checksum does not match the expected one."""


class CheckpointError(ToolkitError, ValueError):
    """A checkpoint that cannot be loaded into the requested model."""
