"""Export a (pruned) model to ONNX: :func:`export_onnx`, and onnxruntime sessions on CPU.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used first: it
needs only the ``onnx`` package (for the checker) and handles pruned convnets and timm ViTs.
Where it is missing or fails and ``onnxscript`` is installed, the ``torch.export``-based
(dynamo) exporter is tried. Every failure is a :class:`~agentic_toolkit.errors.ToolkitError`
naming the step that failed (export, checker, onnxruntime).
"""

from __future__ import annotations

import copy
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ToolkitError

DEFAULT_OPSET = 17  # LayerNormalization is a single op from 17; onnxruntime >= 1.14 runs it
INSTALL_HINT = "pip install onnx onnxruntime (or the agentic_toolkit[onnx] extra)"


def _as_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ToolkitError("example_inputs must be a tensor or a sequence of tensors, "
                           f"got {type(example_inputs).__name__}")
    # detached CPU copies outside inference mode: tracing rejects inference tensors
    with torch.inference_mode(False):
        return tuple(t.detach().cpu().clone() for t in inputs)


def _names(names: Sequence[str] | str, n: int | None, what: str) -> list[str]:
    out = [names] if isinstance(names, str) else list(names)
    if not out or not all(isinstance(s, str) and s for s in out) or len(set(out)) != len(out):
        raise ToolkitError(f"{what} must be distinct non-empty strings, got {names!r}")
    if n is not None and len(out) != n:
        raise ToolkitError(f"{len(out)} {what} for {n} example input(s): {names!r}")
    return out


def _export(model, inputs, path: Path, opset: int, in_names, out_names, dynamic_batch: bool) -> None:
    """Write ``path`` with the TorchScript exporter, else (with onnxscript) the dynamo one."""
    axes = {n: {0: "batch"} for n in (*in_names, *out_names)} if dynamic_batch else None
    kwargs = dict(input_names=in_names, output_names=out_names, opset_version=opset)
    errors = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
            torch.onnx.export(model, inputs, str(path), dynamic_axes=axes, dynamo=False, **kwargs)
        return
    except Exception as exc:  # a removed legacy exporter, an op it cannot convert
        errors.append(f"TorchScript exporter: {type(exc).__name__}: {_first_line(exc)}")
    if importlib.util.find_spec("onnxscript") is None:
        errors.append("dynamo exporter: not tried (onnxscript is not installed)")
    else:
        try:
            shapes = [{0: torch.export.Dim("batch")} for _ in inputs] if dynamic_batch else None
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, inputs, str(path), dynamic_shapes=shapes, dynamo=True, **kwargs)
            return
        except Exception as exc:
            errors.append(f"dynamo exporter: {type(exc).__name__}: {_first_line(exc)}")
    raise ToolkitError(f"ONNX export of {type(model).__name__} (opset {opset}) failed; " + "; ".join(errors))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else "")[:300]


def export_onnx(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    input_names: Sequence[str] | str = ("input",),
    output_names: Sequence[str] | str = ("output",),
    dynamic_batch: bool = True,
    check: bool = True,
) -> Path:
    """Export ``model`` (a copy, in eval mode, on CPU) to the ONNX file ``path``.

    The model itself is not modified.

    Args:
        model: the model to export.
        example_inputs: fixes every dimension but the batch.
        path: the ``.onnx`` file to write.
        opset: the ONNX opset (TorchScript exporter: no onnxscript needed).
        input_names, output_names: names of the graph's inputs and outputs.
        dynamic_batch: keep the batch dimension symbolic (``"batch"``), so one file serves
            every batch size.
        check: validate the file with ``onnx.checker`` (needs the ``onnx`` package).

    Returns:
        The file's path.

    Raises:
        ToolkitError: naming the step that failed.

    Example:
        >>> import tempfile, torch, agentic_toolkit as at
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     path = at.export_onnx(model, torch.randn(1, 3, 16, 16), f"{tmp}/tiny.onnx")
        ...     path.name, path.stat().st_size > 0
        ('tiny.onnx', True)
    """
    if not isinstance(model, nn.Module):
        raise ToolkitError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 9:
        raise ToolkitError(f"opset must be an int >= 9, got {opset!r}")
    inputs = _as_tuple(example_inputs)
    in_names = _names(input_names, len(inputs), "input_names")
    out_names = _names(output_names, None, "output_names")
    path = Path(path).expanduser()
    if path.is_dir():
        raise ToolkitError(f"path must be a file name such as model.onnx, got the directory {path}")
    if check and importlib.util.find_spec("onnx") is None:
        raise ToolkitError(f"check=True needs the onnx package to validate the export: {INSTALL_HINT}")
    path.parent.mkdir(parents=True, exist_ok=True)
    cpu_model = copy.deepcopy(model).cpu().eval()
    with torch.inference_mode(False), torch.no_grad():
        _export(cpu_model, inputs, path, opset, in_names, out_names, dynamic_batch)
    if check:
        import onnx

        try:
            onnx.checker.check_model(str(path), full_check=True)
        except Exception as exc:
            raise ToolkitError(f"the exported ONNX file {path} fails onnx.checker: {_first_line(exc)}") from exc
    return path


def ort_session(path: str | Path, threads: int | None = None):
    """An onnxruntime ``InferenceSession`` of the file on CPU (``threads`` intra-op threads,
    one inter-op thread; ``None``: onnxruntime's default)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ToolkitError(f"onnxruntime is not installed: {INSTALL_HINT}") from None
    opts = ort.SessionOptions()
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ToolkitError(f"onnxruntime cannot load {path}: {_first_line(exc)}") from exc
