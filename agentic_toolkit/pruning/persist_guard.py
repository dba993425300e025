"""What :func:`~agentic_toolkit.pruning.persist.load_pruned` trusts, and how a save lands.

A saved folder is untrusted input. :func:`base_spec` turns every way of naming the base
architecture (``architecture``, a legacy ``toolkit_spec``, a ``base_model`` name) into one
``{"source", "name", "kwargs"}`` spec that passes the same allow-list
(:func:`~agentic_toolkit.models.check_arch_kwargs`); :func:`check_spec` refuses implausible
class counts and sizes by building the model on the meta device first (no memory) and
comparing it with the weights file; :func:`checked_input_shape` bounds the example input.
:func:`staged_dir` writes a folder beside its destination and renames it into place, so a
crash never leaves a half-written folder where ``load_pruned`` looks.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import CheckpointError, ToolkitError, UnknownModelError
from ..models import build_architecture

#: The most elements an example input of a loaded model may have (64 M: 256 MB in float32).
MAX_INPUT_ELEMENTS = 64 * 2**20
#: The most classes a loaded model may have.
MAX_CLASSES = 100_000
#: The unpruned model may hold at most this many times the elements of the pruned weights...
MAX_GROWTH = 1000
#: ... and never more than this many elements (8 GB in float32).
MAX_BASE_ELEMENTS = 2**31


def checked_input_shape(meta: dict) -> tuple[int, ...]:
    """``meta["input_shape"]`` as a tuple of positive ints with at most :data:`MAX_INPUT_ELEMENTS`."""
    shape = meta.get("input_shape")
    ok = isinstance(shape, list) and 1 <= len(shape) <= 8 and all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
    if not ok:
        raise CheckpointError(f"meta.json: input_shape must be a list of 1 to 8 positive integers, got {shape!r}")
    if math.prod(shape) > MAX_INPUT_ELEMENTS:
        raise CheckpointError(
            f"meta.json: input_shape {shape} has {math.prod(shape):,} elements, more than the "
            f"{MAX_INPUT_ELEMENTS:,} a pruned model's example input may have"
        )
    return tuple(shape)


def base_spec(meta: dict, base_model: str | None) -> dict:
    """The one spec the base architecture is built from, whatever named it.

    ``base_model`` ``"timm:NAME"`` / ``"torchvision:NAME"`` (the recorded arguments when the
    name matches) or a :func:`~agentic_toolkit.create_model` name (the recorded class count),
    else ``meta["architecture"]``, else the legacy ``toolkit_spec`` (folders written before
    ``architecture`` existed). Raises :class:`ToolkitError` when nothing names one.
    """
    arch = meta.get("architecture")
    arch = arch if isinstance(arch, dict) else None
    legacy = meta.get("toolkit_spec") if isinstance(meta.get("toolkit_spec"), dict) else {}
    classes = {"num_classes": legacy["num_classes"]} if legacy.get("num_classes") is not None else {}
    if isinstance(base_model, str):
        source, _, name = base_model.rpartition(":")
        if not source:
            return {"source": "agentic_toolkit", "name": base_model, "kwargs": classes}
        kwargs = arch.get("kwargs") if arch is not None and arch.get("name") == name else {}
        return {"source": source, "name": name, "kwargs": kwargs or {}}
    if arch is not None:
        return arch
    if legacy.get("name"):
        kwargs = legacy.get("kwargs") if isinstance(legacy.get("kwargs"), dict) else {}
        return {"source": "agentic_toolkit", "name": legacy["name"], "kwargs": {**classes, **kwargs}}
    why = meta.get("architecture_note") or "it was not built by agentic_toolkit.create_model"
    raise ToolkitError(
        f"the saved model ({meta.get('model_class')}) has no recorded base architecture ({why}): "
        "pass base_model=<an unpruned instance> or a model name such as 'timm:resnet18'"
    )


def _saved_elements(weights: Path) -> int | None:
    """Elements in a safetensors file, from its header only; None when it cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    except Exception:  # noqa: BLE001 - a missing or corrupt file is reported when it is loaded
        return None


def check_spec(spec: dict, weights: Path | None = None) -> None:
    """Refuse ``spec`` before anything is allocated: arguments off the allow-list, a class
    count outside 1..:data:`MAX_CLASSES`, or a model (built on the meta device) larger than
    :data:`MAX_BASE_ELEMENTS` or :data:`MAX_GROWTH` times the elements of ``weights``."""
    kwargs = spec.get("kwargs") if isinstance(spec.get("kwargs"), dict) else {}
    classes = kwargs.get("num_classes")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, int)
                                or not 1 <= classes <= MAX_CLASSES):
        raise CheckpointError(f"num_classes={classes!r} is not a plausible class count (1 to {MAX_CLASSES:,})")
    label = f"{spec.get('source')}:{spec.get('name')}"
    try:
        skeleton = build_architecture(spec, device="meta")
    except UnknownModelError as exc:
        raise CheckpointError(f"cannot rebuild the base architecture {label}: {exc}") from None
    elements = sum(t.numel() for t in [*skeleton.parameters(), *skeleton.buffers()])
    saved = _saved_elements(weights) if weights is not None else None
    limit = MAX_BASE_ELEMENTS if saved is None else min(MAX_BASE_ELEMENTS, MAX_GROWTH * saved)
    if elements > limit:
        held = "" if saved is None else f" (the weights file holds {saved:,})"
        raise CheckpointError(
            f"the base architecture {label} with {kwargs} has {elements:,} elements{held}, more than "
            f"{limit:,}: its widths do not fit the saved model; refusing to allocate it"
        )


@contextlib.contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """A temporary sibling folder to write into; renamed to ``out`` when the block succeeds.

    Entries of an existing ``out`` that the block did not write are kept; on failure the
    temporary folder is removed and ``out`` is left as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        tmp.chmod(0o755)  # as a plain mkdir makes it (mkdtemp makes it private)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    if not out.is_dir():
        raise ToolkitError(f"{out} exists and is not a directory")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # put the previous folder back
        raise
    for entry in old.iterdir():  # keep what the save did not replace (a crash here leaves it in `old`)
        if not (out / entry.name).exists():
            os.rename(entry, out / entry.name)
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["MAX_CLASSES", "MAX_INPUT_ELEMENTS", "base_spec", "check_spec", "checked_input_shape", "staged_dir"]
