"""Save and load pruned models without pickle.

A saved model is a directory:

- ``strategy.json``: the strategy that produced it;
- ``history.json``: torch-pruning's pruning history (root layer, output pruning?, indices);
- ``meta.json``: how to rebuild the unpruned model (``architecture``: source
  agentic_toolkit/timm/torchvision, name and plain constructor arguments; see
  :func:`architecture_spec`), the input shape, attention head
  counts and the measured numbers;
- ``model.safetensors``: the pruned weights and buffers.

Loading rebuilds the base architecture (from ``architecture``, or a ``base_model`` you
pass), replays the history through a fresh dependency graph and loads the weights
strictly; nothing is unpickled, and only plain keyword arguments reach a model builder.
:func:`write_pruned_dir` writes the same folder for a model whose weights changed after
pruning (e.g. fine-tuned), from the folder it was loaded from.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CheckpointError, ToolkitError, UnknownModelError
from ..models import accepted_kwargs, as_tuples, build_architecture, check_arch_kwargs, plain_value
from ..version import __version__
from .apply import PruneResult, layer_widths
from .attention import find_attention, sync_attention_attributes
from .cutting import replay_history
from .groups import build_graph
from .persist_guard import base_spec, check_spec, checked_input_shape, staged_dir
from .strategy import Strategy

FORMAT = 1
FILES = ("strategy.json", "history.json", "meta.json", "model.safetensors")


def save_pruned(
    path: str | Path, result: PruneResult, architecture: str | None = None, architecture_kwargs: dict | None = None
) -> Path:
    """Write ``result`` to the directory ``path`` (created; existing files are replaced).

    The base architecture is recorded so that :func:`load_pruned` needs no ``base_model``:
    found automatically for models from :func:`agentic_toolkit.create_model`,
    ``timm.create_model`` and torchvision's builders. When it cannot be found, ``meta.json``
    says why and loading needs ``base_model=``.

    Args:
        path: the directory (``strategy.json``, ``history.json``, ``meta.json``,
            ``model.safetensors``).
        result: a :class:`PruneResult` (``apply_isomorphic_prune``, ``fit.prune()``, a search's).
        architecture: ``"timm:NAME"`` / ``"torchvision:NAME"`` when it cannot be found.
        architecture_kwargs: that builder's keywords (plain values only).

    Returns:
        The directory.

    Example:
        >>> import tempfile, torch, agentic_toolkit as at
        >>> x = torch.randn(1, 3, 32, 32)
        >>> res = at.apply_isomorphic_prune(at.create_model("cifar_resnet20"), at.Strategy(pruning_ratio=0.3), x)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     folder = at.save_pruned(tmp, res)
        ...     sorted(p.name for p in folder.iterdir())
        ['history.json', 'meta.json', 'model.safetensors', 'strategy.json']
    """
    from safetensors.torch import save_model

    if not isinstance(result, PruneResult):
        raise ToolkitError(f"save_pruned needs a PruneResult, got {type(result).__name__}")
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"{out} exists and is not a directory")
    arch, why = architecture_spec(result.model, architecture, architecture_kwargs, result.base_widths)
    if architecture and arch is None:
        raise ToolkitError(f"architecture={architecture!r} does not describe this model: {why}")
    spec = getattr(result.model, "toolkit_spec", None)
    meta = {
        "format": FORMAT,
        "toolkit_version": __version__,
        "architecture": arch,
        "architecture_note": why,
        "toolkit_spec": spec if isinstance(spec, dict) and arch and arch["source"] == "agentic_toolkit" else None,
        "model_class": type(result.model).__name__,
        "input_shape": list(result.input_shape),
        "num_heads": dict(result.num_heads),
        "macs": int(result.macs),
        "params": int(result.params),
        "base_macs": int(result.base_macs),
        "base_params": int(result.base_params),
        "predicted_macs": int(result.predicted_macs),
        "notes": list(result.notes),
    }
    history = [[str(n), bool(o), [int(i) for i in idx]] for n, o, idx in result.history]
    with staged_dir(out) as tmp:  # a crash leaves no half-written folder at `out`
        (tmp / "strategy.json").write_text(result.strategy.to_json(indent=2) + "\n")
        (tmp / "history.json").write_text(json.dumps({"format": FORMAT, "history": history}) + "\n")
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_model(result.model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return out


def write_pruned_dir(path: str | Path, model: nn.Module, source: str | Path, note: str = "") -> Path:
    """Write ``model`` (a model loaded from the :func:`save_pruned` folder ``source`` and
    then changed in its weights only, e.g. fine-tuned) as a folder :func:`load_pruned`
    reads: ``source``'s strategy, history and meta (``note`` added) with ``model``'s weights.
    ``path`` may be ``source`` itself (its weights are replaced)."""
    from safetensors.torch import save_file

    src, out = Path(source), Path(path)
    meta = _read_json(src / "meta.json")
    texts = {name: (src / name).read_text() for name in ("strategy.json", "history.json")}
    if note:
        meta["notes"] = [*meta.get("notes", []), note]
    # own CPU copies: the model may live on a GPU, in channels-last, or tie weights
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    with staged_dir(out) as tmp:
        for name, text in texts.items():
            (tmp / name).write_text(text)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    return out


# ------------------------------------------------------------------ recording the architecture

def _mismatch(spec: dict, model: nn.Module, base_widths: dict | None) -> str:
    """Why ``spec`` does not rebuild ``model``'s (unpruned) architecture, or ""."""
    label = f"{spec['source']}:{spec['name']}"
    try:
        candidate = build_architecture(spec, device="meta")
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        return f"{label} cannot be built: {(str(exc).splitlines() or [type(exc).__name__])[0][:200]}"
    if type(candidate) is not type(model):
        return f"{label} builds a {type(candidate).__name__}, not a {type(model).__name__}"
    if set(candidate.state_dict()) != set(model.state_dict()):
        return f"{label} builds different layers than {type(model).__name__}"
    if base_widths and layer_widths(candidate) != dict(base_widths):
        return f"{label} builds different layer widths (pass architecture_kwargs=...)"
    return ""


def _attr(model: nn.Module, key: str):
    value = getattr(model, key, None)
    if value is None and key == "img_size":  # timm keeps it on the patch embedding
        value = getattr(getattr(model, "patch_embed", None), "img_size", None)
    return as_tuples(value) if plain_value(value) and value is not None else None


def _derived(source: str, name: str, model: nn.Module, base: dict) -> dict:
    """``base`` plus every constructor argument whose value, read from the model's
    attributes, differs from a default build (e.g. ``img_size``, ``drop_rate``)."""
    spec = {"source": source, "name": name, "kwargs": base}
    try:
        default = build_architecture(spec, device="meta")
    except Exception:  # noqa: BLE001 - keep the base arguments; the check reports the rest
        return base
    kwargs = dict(base)
    for key in sorted(accepted_kwargs(source, name, type(default)) - set(base)):
        mine, theirs = _attr(model, key), _attr(default, key)
        if mine is not None and mine != theirs:
            try:
                kwargs[key] = check_arch_kwargs({key: mine})[key]
            except UnknownModelError:
                continue
    return kwargs


def _candidates(model: nn.Module) -> list[tuple[str, str, dict]]:
    """Possible ``(source, name, kwargs)`` of a model, most likely first."""
    spec = getattr(model, "toolkit_spec", None)
    if isinstance(spec, dict) and spec.get("name"):
        extra = {"num_classes": spec["num_classes"]} if spec.get("num_classes") is not None else {}
        return [("agentic_toolkit", spec["name"], {**extra, **check_arch_kwargs(spec.get("kwargs"))})]
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if isinstance(cfg, dict) and cfg.get("architecture"):
        nc = getattr(model, "num_classes", None)
        base = {"num_classes": nc} if isinstance(nc, int) else {}
        return [("timm", cfg["architecture"], _derived("timm", cfg["architecture"], model, base))]
    module = type(model).__module__
    if module.startswith("torchvision.models."):
        import torchvision

        widths = layer_widths(model)
        last = list(widths.values())[-1:] or [None]
        out = []
        for name in torchvision.models.list_models(module=torchvision.models):
            if torchvision.models.get_model_builder(name).__module__ == module:
                base = {"num_classes": last[0]} if last[0] not in (None, 1000) else {}
                out.append(("torchvision", name, _derived("torchvision", name, model, base)))
        return out
    return []


def architecture_spec(
    model: nn.Module, source: str | None = None, kwargs: dict | None = None, base_widths: dict | None = None
) -> tuple[dict | None, str]:
    """How to rebuild the unpruned architecture of ``model``: ``({"source", "name",
    "kwargs"}, "")``, or ``(None, reason)``.

    Found from :func:`create_model`'s tag, timm's ``pretrained_cfg["architecture"]`` or,
    for torchvision models, the builder of the model's class whose default build matches;
    ``source="timm:NAME"`` / ``"torchvision:NAME"`` / ``"agentic_toolkit:NAME"`` (with
    ``kwargs``) says it explicitly. Constructor arguments are read from the model where
    they differ from a default build; only plain ones are kept (:func:`check_arch_kwargs`).
    The spec is checked by building it on the meta device: same class, same layers, and
    the same layer widths as ``base_widths`` (the widths before pruning) when given.
    """
    try:
        if source:
            src, _, name = source.partition(":")
            candidates = [(src, name, check_arch_kwargs(kwargs))]
        else:
            candidates = _candidates(model)
    except UnknownModelError as exc:
        return None, str(exc)
    reasons = []
    for src, name, kw in candidates:
        spec = {"source": src, "name": name, "kwargs": kw}
        why = _mismatch(spec, model, base_widths)
        if not why:
            return spec, ""
        reasons.append(why)
    if not reasons:
        return None, f"{type(model).__name__} was not built by agentic_toolkit, timm or torchvision"
    return None, reasons[0] if len(reasons) == 1 else f"no builder matches ({'; '.join(reasons[:3])})"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing; is {path.parent} a directory written by save_pruned?") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def _base_model(meta: dict, base_model: nn.Module | str | None, weights: Path) -> nn.Module:
    """The unpruned model: a copy of ``base_model``, or built from the one checked spec
    (:func:`~agentic_toolkit.pruning.persist_guard.base_spec`, checked before allocating)."""
    if isinstance(base_model, nn.Module):
        return copy.deepcopy(base_model)
    spec = base_spec(meta, base_model)
    check_spec(spec, weights)
    try:
        return build_architecture(spec)
    except UnknownModelError as exc:
        raise CheckpointError(f"cannot rebuild the base architecture {spec}: {exc}") from None


def _load_weights(model: nn.Module, path: Path) -> tuple[list[str], list[str]]:
    """Copy a safetensors file into ``model`` one tensor at a time (no second copy of the
    whole model in memory): ``(missing, unexpected)`` keys. Keys missing only because they
    share a tensor with a loaded one (tied weights, saved once) do not count."""
    from safetensors import safe_open

    own = model.state_dict()
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        with torch.no_grad():
            for k in keys:
                if k not in own:
                    continue
                t = f.get_tensor(k)
                if t.shape != own[k].shape:
                    raise ValueError(f"{k}: saved {tuple(t.shape)}, model {tuple(own[k].shape)}")
                own[k].copy_(t)
    loaded = {own[k].data_ptr() for k in keys if k in own}
    missing = [k for k in own if k not in keys and own[k].data_ptr() not in loaded]
    return missing, [k for k in keys if k not in own]


def load_pruned(path: str | Path, base_model: nn.Module | str | None = None) -> PruneResult:
    """Rebuild a model saved by :func:`save_pruned` (in eval mode).

    Args:
        path: the directory :func:`save_pruned` wrote.
        base_model: an unpruned instance, or a name (``create_model``'s, or
            ``"timm:NAME"`` / ``"torchvision:NAME"``) to rebuild from; needed only when the
            folder records no architecture (``meta.json``'s ``architecture_note`` says why).

    Returns:
        A :class:`PruneResult` with the rebuilt model, its strategy and MACs.

    Raises:
        CheckpointError: no saved model there, or one that does not fit ``base_model``.

    Example:
        >>> import tempfile, torch, agentic_toolkit as at
        >>> x = torch.randn(1, 3, 32, 32)
        >>> res = at.apply_isomorphic_prune(at.create_model("cifar_resnet20"), at.Strategy(pruning_ratio=0.3), x)
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     loaded = at.load_pruned(at.save_pruned(tmp, res))
        >>> loaded.macs == res.macs, torch.equal(loaded.model(x), res.model(x))
        (True, True)
    """
    from ..profiling.profile import profile_macs

    root = Path(path)
    if not root.is_dir():
        raise CheckpointError(f"no saved pruned model at {root} (expected a directory with {', '.join(FILES)})")
    meta = _read_json(root / "meta.json")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{root}: unsupported format {meta.get('format')!r} (this toolkit reads {FORMAT})")
    strategy = Strategy.from_json((root / "strategy.json").read_text())
    history = _read_json(root / "history.json").get("history", [])
    shape = checked_input_shape(meta)
    model = _base_model(meta, base_model, root / "model.safetensors")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    x = torch.zeros(shape, dtype=dtype)
    params = dict(model.named_parameters())
    attention = find_attention(model)
    tables = [params[n] for a in attention for n in a.head_tables if n in params]
    requires_grad = {n: p.requires_grad for n, p in params.items()}
    del params  # else every original weight stays alive while the history replaces it
    base_widths = layer_widths(model)
    graph = build_graph(model, x, tables)
    try:
        with torch.no_grad():
            replay_history(graph, [[n, o, list(idx)] for n, o, idx in history])
    except Exception as exc:  # includes GroupDiverged, a missing layer
        raise CheckpointError(
            f"cannot replay the pruning history of {root} on {type(model).__name__}: {exc}. "
            "Is base_model the same unpruned architecture?"
        ) from exc
    for n, p in model.named_parameters():
        p.requires_grad_(requires_grad.get(n, True))
    sync_attention_attributes(
        model, {k: int(v) for k, v in meta.get("num_heads", {}).items()}, {a.name: a.head_dim for a in attention}
    )
    try:
        missing, unexpected = _load_weights(model, root / "model.safetensors")
    except Exception as exc:  # shape mismatch, corrupt file
        raise CheckpointError(f"cannot load {root / 'model.safetensors'}: {exc}") from exc
    if missing or unexpected:
        raise CheckpointError(
            f"{root / 'model.safetensors'} does not fit the rebuilt model: missing {list(missing)[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    model.eval()
    profile = profile_macs(model, example_inputs=x)
    return PruneResult(
        model=model,
        strategy=strategy,
        macs=int(profile.total_macs),
        params=int(profile.params),
        base_macs=int(meta.get("base_macs", 0)),
        base_params=int(meta.get("base_params", 0)),
        widths=layer_widths(model),
        history=history,
        predicted_macs=int(meta.get("predicted_macs", profile.total_macs)),
        input_shape=shape,
        num_heads={k: int(v) for k, v in meta.get("num_heads", {}).items()},
        notes=list(meta.get("notes", [])),
        base_widths=base_widths,
    )
