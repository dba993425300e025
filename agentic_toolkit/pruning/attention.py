"""Multi-head attention modules as torch-pruning sees them, and their repair after pruning.

torch-pruning only keeps a fused ``qkv`` projection consistent with the per-head layout
when it is told the number of heads (``num_heads={qkv: H}``); timm's attention then reads
``num_heads``, ``head_dim``, ``attn_dim`` and ``scale`` from attributes that pruning does
not touch. This module finds the attention blocks we can prune safely and rewrites those
attributes from the pruned weights (timm >= 1.0 needs no forward patch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class AttentionInfo:
    """One fused-qkv attention module: its name, head count and whether heads may be removed."""

    name: str
    num_heads: int
    head_dim: int
    heads_prunable: bool
    reason: str = ""  # why it is not prunable at all ("" when head dims can be pruned)
    head_tables: tuple[str, ...] = ()  # per-head parameters (kept whole: heads are never removed)


def _is_identity(m: object) -> bool:
    return m is None or isinstance(m, nn.Identity)


def find_attention(model: nn.Module) -> list[AttentionInfo]:
    """Every module with a fused ``qkv`` Linear and an integer ``num_heads``.

    ``reason`` is non-empty for modules whose head dimension cannot be pruned safely
    (per-head q/k norms, gates, or a qkv width that is not ``3 * heads * head_dim``).
    Heads can be removed only when no per-head parameter table is attached
    (e.g. Swin's relative position bias, which torch-pruning would couple with the wrong
    dimension: such tables are listed in ``head_tables`` and kept out of the graph).
    """
    found = []
    for name, m in model.named_modules():
        qkv = getattr(m, "qkv", None)
        heads = getattr(m, "num_heads", None)
        if not isinstance(qkv, nn.Linear) or not isinstance(heads, int) or heads < 1:
            continue
        reason = ""
        if qkv.out_features % (3 * heads):
            reason = f"qkv width {qkv.out_features} is not 3 x {heads} heads x head_dim"
        elif not (_is_identity(getattr(m, "q_norm", None)) and _is_identity(getattr(m, "k_norm", None))):
            reason = "per-head q/k normalisation"
        elif getattr(m, "gate", None) is not None:
            reason = "gated attention output"
        head_dim = qkv.out_features // (3 * heads)
        per_head_tables = tuple(
            f"{name}.{n}" if name else n
            for n, p in m.named_parameters(recurse=False)
            if p.ndim >= 1 and heads in p.shape and "bias_table" in n
        )
        found.append(
            AttentionInfo(name, heads, head_dim, not per_head_tables, reason=reason, head_tables=per_head_tables)
        )
    return found


def num_heads_map(model: nn.Module, infos: list[AttentionInfo]) -> dict[nn.Module, int]:
    """A fresh ``{qkv Linear: num_heads}`` dict for torch-pruning (it mutates the dict it gets)."""
    modules = dict(model.named_modules())
    return {modules[i.name].qkv: i.num_heads for i in infos if not i.reason}


def sync_attention_attributes(
    model: nn.Module, kept_heads: dict[str, int] | None = None, base_head_dims: dict[str, int] | None = None
) -> None:
    """Rewrite ``num_heads``/``head_dim``/``attn_dim``/``scale`` of every fused-qkv attention
    from its (pruned) weights so that the forward pass and ``torch.compile`` see the new shape.

    ``kept_heads`` gives the head count of attention modules whose heads were removed (the
    others keep ``num_heads``). ``scale`` becomes ``head_dim ** -0.5`` only where the head
    dimension changed (``base_head_dims``: head dims before pruning; without it, wherever
    ``head_dim`` differs from the module's attribute or from ``scale ** -2``).
    """
    kept_heads = kept_heads or {}
    base_head_dims = base_head_dims or {}
    for name, m in model.named_modules():
        qkv = getattr(m, "qkv", None)
        heads = getattr(m, "num_heads", None)
        if not isinstance(qkv, nn.Linear) or not isinstance(heads, int):
            continue
        heads = int(kept_heads.get(name, heads))
        attn_dim, rest = divmod(qkv.out_features, 3)
        if rest or attn_dim % heads:
            if name in kept_heads:
                raise RuntimeError(f"{name}: attention width {attn_dim} is not a multiple of {heads} heads")
            continue  # not a fused 3 x heads layout (e.g. GCViT's kv-only projection): never pruned
        head_dim = attn_dim // heads
        old = base_head_dims.get(name, getattr(m, "head_dim", None))
        scale = getattr(m, "scale", None)
        if old is None and isinstance(scale, float) and scale > 0:
            old = round(scale**-2)
        m.num_heads = heads
        if hasattr(m, "head_dim"):
            m.head_dim = head_dim
        if hasattr(m, "attn_dim"):
            m.attn_dim = attn_dim
        if isinstance(scale, float) and old != head_dim:
            m.scale = head_dim**-0.5
