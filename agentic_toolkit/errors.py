"""Exceptions raised by agentic_toolkit.

Every error a user can cause by bad input derives from :class:`ToolkitError`, so a
notebook can catch one type, and each message says what went wrong and how to fix it.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """Base class for all errors raised on bad input.

    Args:
        *args: the message, as for any exception.

    Example:
        >>> import agentic_toolkit as at
        >>> try:
        ...     at.Recipe(epochs=0)
        ... except at.ToolkitError as exc:
        ...     print(exc)
        epochs must be a positive integer, got 0
    """


class UnknownModelError(ToolkitError, ValueError):
    """A model name that neither timm nor the toolkit knows (also a ``ValueError``).

    Args:
        *args: the message, with close matches when there are some.

    Example:
        >>> import agentic_toolkit as at
        >>> at.create_model("cifar_resnet21")
        Traceback (most recent call last):
        ...
        agentic_toolkit.errors.UnknownModelError: unknown model 'cifar_resnet21'. Did you mean: ...
    """


class DataNotFoundError(ToolkitError, FileNotFoundError):
    """A data set or checkpoint that could not be located (also a ``FileNotFoundError``).

    Args:
        *args: the message: where it looked and how to point the toolkit at the file.

    Example:
        >>> import agentic_toolkit as at
        >>> at.create_model("resnet18", pretrained=True)  # timm weights are never downloaded
        Traceback (most recent call last):
        ...
        agentic_toolkit.errors.DataNotFoundError: pretrained=True for timm model 'resnet18' would download ...
    """


class ChecksumError(ToolkitError, ValueError):
    """A file whose checksum does not match the expected one (also a ``ValueError``).

    Args:
        *args: the message, naming the file and both digests.

    Example:
        >>> import agentic_toolkit as at
        >>> issubclass(at.ChecksumError, at.ToolkitError)
        True
    """


class CheckpointError(ToolkitError, ValueError):
    """A checkpoint that cannot be loaded into the requested model (also a ``ValueError``).

    Args:
        *args: the message, naming the mismatching tensors.

    Example:
        >>> import tempfile, torch, agentic_toolkit as at
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     torch.save(at.create_model("cifar_resnet20").state_dict(), f"{tmp}/resnet20.pth")
        ...     at.create_model("cifar_resnet32", pretrained=f"{tmp}/resnet20.pth")
        Traceback (most recent call last):
        ...
        agentic_toolkit.errors.CheckpointError: checkpoint .../resnet20.pth does not fit CifarResNet: ...
    """
