"""Named pruning scopes: the handles a strategy's ``multipliers`` address.

Every prunable channel group gets a *kind* and, where it lives in one stage, a *stage*
tag. A group's ratio is ``pruning_ratio`` times the product of the multipliers of its
tags (capped by ``max_layer_ratio``). Names are derived from the model:

- ``stem``, ``stage1`` .. ``stageK``, ``head``: position, from timm's ``group_matcher``
  (coarse) where the model has one, else from the top-level ``nn.Sequential`` children
  (e.g. CIFAR ResNet ``layer1..3``). In a plain ViT every block is a stage.
- ``residual``: channels carried between blocks (stage widths, the ViT embedding).
- ``<block>.inner`` / ``<block>.mlp`` / ``<block>.se``: channels inside one block, named
  after the block type (``bottleneck.inner``, ``basicblock.inner``, ``convnext.mlp``,
  ``vit.mlp``, ``swin.mlp``, ``mbconv.inner``, ``mbconv.se``, ...).
- ``group:<root layer>``: one channel group alone (e.g. ``group:layer1.0.conv1``), for
  per-layer allocations such as a sensitivity search; not listed among the scopes an agent
  is shown (see :meth:`~agentic_toolkit.pruning.plan.PrunePlan.group_scopes`).
- ``attn.head_dim``: dimensions per attention head; ``attn.heads``: whole heads, pruned
  only when the strategy gives ``attn.heads`` a multiplier (heads and head dims both
  shrink the attention width, so pruning both by default would double-count).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable

import pandas as pd
import torch.nn as nn

from .groups import ChannelGroup

HEADS_SCOPE = "attn.heads"
HEAD_DIM_SCOPE = "attn.head_dim"
GROUP_PREFIX = "group:"

# block class -> family prefix; other classes use their lower-cased name without "block"
_FAMILY_ALIASES = {
    "Bottleneck": "bottleneck",
    "BasicBlock": "basicblock",
    "ConvNeXtBlock": "convnext",
    "SwinTransformerBlock": "swin",
    "SwinTransformerV2Block": "swinv2",
    "InvertedResidual": "mbconv",
    "DepthwiseSeparableConv": "dsconv",
    "EdgeResidual": "fusedmbconv",
    "Block": "vit",
    "ResPostBlock": "vit",
    "ParallelScalingBlock": "vit",
}
_KIND_DESCRIPTIONS = {
    "stem": "stem output channels",
    "head": "channels of the layers after the last stage (before the classifier)",
    "residual": "channels carried between blocks (stage widths / residual stream / embedding)",
    HEAD_DIM_SCOPE: "dimensions per attention head (q, k, v and the output projection input)",
    HEADS_SCOPE: "whole attention heads (pruned only when this scope has a multiplier)",
}


def _compile_matcher(spec: dict) -> list[tuple[re.Pattern, tuple[int, ...], tuple | None]]:
    """timm group_matcher dict -> [(regex, prefix ordinal, suffix)] (timm's own format)."""
    compiled = []
    for ordinal, (_, mspec) in enumerate(spec.items()):
        if mspec is None:
            continue
        if isinstance(mspec, (tuple, list)):
            compiled += [(re.compile(s[0]), (ordinal,), s[1]) for s in mspec]
        else:
            compiled.append((re.compile(mspec), (ordinal,), None))
    return compiled


def _ordinal(name: str, compiled, tagged: bool = False) -> tuple[float, ...] | None:
    """timm's layer ordinal of ``name``; ``tagged`` prefixes the index of the matching rule,
    so that different rules never share an ordinal (timm's may collide, e.g. Swin's
    ``layers.3.downsample`` and ``layers.3.blocks.0``)."""
    for i, (regex, prefix, suffix) in enumerate(compiled):
        m = regex.match(name)
        if m:
            parts = list(prefix) + [float(g) for g in m.groups() if g is not None] + list(suffix or ())
            return ((float(i),) if tagged else ()) + tuple(float(p) for p in parts)
    return None


class ModelLayout:
    """Stage and block of every module name of a model."""

    def __init__(self, model: nn.Module):
        self.model_class = type(model).__name__
        self._modules = dict(model.named_modules())
        params = [n for n, _ in model.named_parameters()]
        names = [n for n in self._modules if n] + params
        self.stage_of: dict[str, str] = {}
        self.block_of: dict[str, str] = {}
        matcher = getattr(model, "group_matcher", None)
        coarse = fine = None
        if callable(matcher):
            try:
                coarse, fine = _compile_matcher(matcher(coarse=True)), _compile_matcher(matcher(coarse=False))
            except Exception:  # a model whose matcher is not a timm-style dict
                coarse = fine = None
        if coarse is not None:
            self._from_matchers(names, coarse, fine)
        else:
            self._from_sequentials(model, names)
        self._find_blocks(names, params)

    def _from_matchers(self, names: list[str], coarse, fine) -> None:
        ords = {n: _ordinal(n, coarse) for n in names}
        stage_keys = sorted({o for o in ords.values() if o is not None and o[0] != 0 and o[-1] != 99999})
        label = {k: f"stage{i + 1}" for i, k in enumerate(stage_keys)}
        for n, o in ords.items():
            if o is None or o[-1] == 99999:
                self.stage_of[n] = "head"
            elif o[0] == 0:
                self.stage_of[n] = "stem"
            else:
                self.stage_of[n] = label[o]
        self._fine = {n: _ordinal(n, fine, tagged=True) for n in names}

    def _from_sequentials(self, model: nn.Module, names: list[str]) -> None:
        children = list(model.named_children())
        stage_idx = [
            i
            for i, (_, c) in enumerate(children)
            if isinstance(c, (nn.Sequential, nn.ModuleList)) and any(True for _ in c.parameters())
        ]
        label = {}
        for i, (cname, _) in enumerate(children):
            if i in stage_idx:
                label[cname] = f"stage{stage_idx.index(i) + 1}"
            elif stage_idx and i > stage_idx[-1]:
                label[cname] = "head"
            else:
                label[cname] = "stem"
        self._fine = {}
        for n in names:
            parts = n.split(".")
            stage = label.get(parts[0], "stem")
            self.stage_of[n] = stage
            self._fine[n] = tuple(parts[:2]) if stage.startswith("stage") and len(parts) > 1 else (parts[0],)

    def _find_blocks(self, names: list[str], params: list[str]) -> None:
        """A name's block: the deepest module holding every parameter of its fine-grained
        group (one residual block, or one stem/head layer); none when that is the model."""
        owners: dict[object, list[list[str]]] = defaultdict(list)
        for p in params:
            owners[self._fine.get(p)].append(p.split(".")[:-1])
        anc = {}
        for key, paths in owners.items():
            common = paths[0]
            for path in paths[1:]:
                n = 0
                while n < min(len(common), len(path)) and common[n] == path[n]:
                    n += 1
                common = common[:n]
            anc[key] = ".".join(common)
        for n in names:
            a = anc.get(self._fine.get(n), "")
            self.block_of[n] = a if a and (n == a or n.startswith(a + ".")) else n

    def owner(self, name: str) -> str:
        """``name`` itself if known, else its closest known ancestor."""
        while name and name not in self.stage_of:
            name = name.rpartition(".")[0]
        return name

    def stage(self, name: str) -> str:
        return self.stage_of.get(self.owner(name), "head")

    def block(self, name: str) -> str:
        return self.block_of.get(self.owner(name), self.owner(name))

    def family(self, block: str) -> str:
        cls = type(self._modules.get(block)).__name__
        if cls == "Block" and "VisionTransformer" not in self.model_class:
            return re.sub(r"(transformer|net)$", "", self.model_class.lower()) or "block"
        if cls in _FAMILY_ALIASES:
            return _FAMILY_ALIASES[cls]
        base = re.sub(r"block$", "", cls.lower())
        return base or "block"

    def is_under(self, name: str, pattern: str) -> bool:
        """Whether some component path of ``name`` matches ``pattern`` (e.g. ``mlp``, ``se``)."""
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            m = self._modules.get(".".join(parts[:i]))
            cls = type(m).__name__.lower() if m is not None else ""
            if parts[i - 1] == pattern or (pattern == "mlp" and cls.endswith("mlp")) or (
                pattern == "se" and ("squeezeexcite" in cls or cls in ("semodule", "seblock"))
            ):
                return True
        return False


def group_scope(group: ChannelGroup) -> str:
    """The multiplier key addressing ``group`` alone: ``"group:<root layer name>"``."""
    return GROUP_PREFIX + group.root_name


def tag_groups(model: nn.Module, groups: Iterable[ChannelGroup]) -> None:
    """Set ``kind`` and ``tags`` of every group (see module docstring)."""
    layout = ModelLayout(model)
    for g in groups:
        names = [m.name for m in g.members]
        out_names = [m.name for m in g.members if m.is_out] or names
        if g.attention:
            kind = HEAD_DIM_SCOPE
        else:
            blocks = {layout.block(n) for n in names}
            stages_out = {layout.stage(n) for n in out_names}
            if len(blocks) == 1 and layout.block(names[0]) != layout.owner(names[0]):
                block = next(iter(blocks))
                fam = layout.family(block)
                outs = [n for n in out_names if n in layout._modules] or out_names
                role = (
                    "mlp"
                    if all(layout.is_under(n, "mlp") for n in outs)
                    else "se"
                    if all(layout.is_under(n, "se") for n in outs)
                    else "inner"
                )
                kind = f"{fam}.{role}"
            elif stages_out == {"stem"}:
                kind = "stem"
            elif stages_out == {"head"}:
                kind = "head"
            else:
                kind = "residual"
        stage_counts = Counter(layout.stage(n) for n in out_names)
        stage, count = stage_counts.most_common(1)[0]
        tags = [kind]
        if stage.startswith("stage") and count * 2 > len(out_names):
            tags.append(stage)
        g.kind = kind
        g.tags = tuple(tags)


def scope_layers(groups: list[ChannelGroup], rows_of_group: dict[int, set[str]]) -> dict[str, set[str]]:
    """Per scope of the prunable groups: the names of the MAC-model layers whose width it changes."""
    touched: dict[str, set[str]] = defaultdict(set)
    for g in groups:
        if not g.prunable:
            continue
        for tag in g.tags:
            touched[tag] |= rows_of_group.get(g.index, set())
        if g.attention and g.heads_prunable:
            touched[HEADS_SCOPE] |= rows_of_group.get(g.index, set())
    return dict(touched)


def scope_table(
    groups: list[ChannelGroup], rows_of_group: dict[int, set[str]], row_macs: dict[str, int], total_macs: int
) -> pd.DataFrame:
    """One row per scope of the prunable groups: name, kind, channels, groups, mac_share,
    description. A scope's MAC share counts each layer whose width it changes once."""
    rows: dict[str, dict] = {}
    for g in groups:
        if not g.prunable:
            continue
        for tag in g.tags:
            r = rows.setdefault(tag, {"name": tag, "kind": _kind_of(tag), "channels": 0, "groups": 0, "examples": []})
            r["channels"] += g.channels
            r["groups"] += 1
            if len(r["examples"]) < 3:
                r["examples"].append(g.root_name)
        if g.attention and g.heads_prunable:
            r = rows.setdefault(
                HEADS_SCOPE, {"name": HEADS_SCOPE, "kind": "heads", "channels": 0, "groups": 0, "examples": []}
            )
            r["channels"] += g.num_heads
            r["groups"] += 1
            if len(r["examples"]) < 3:
                r["examples"].append(g.attention)
    touched = scope_layers(groups, rows_of_group)
    out = []
    for name, r in rows.items():
        desc = _KIND_DESCRIPTIONS.get(name) or _describe(name)
        unit = "heads" if name == HEADS_SCOPE else "channels"
        desc = f"{desc}; {r['groups']} group(s), {r['channels']} {unit}, e.g. {', '.join(r['examples'])}"
        share = sum(row_macs[n] for n in touched.get(name, ())) / total_macs if total_macs else 0.0
        out.append(
            {
                "name": name,
                "kind": r["kind"],
                "channels": int(r["channels"]),
                "groups": int(r["groups"]),
                "mac_share": float(min(share, 1.0)),
                "description": desc,
            }
        )
    order = {"stem": 0, "stage": 1, "head": 2, "residual": 3, "block": 4, "attention": 5, "heads": 6}
    out.sort(key=lambda r: (order.get(r["kind"], 9), _natural(r["name"])))
    return pd.DataFrame(out, columns=["name", "kind", "channels", "groups", "mac_share", "description"])


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _kind_of(tag: str) -> str:
    if tag.startswith("stage"):
        return "stage"
    if tag in ("stem", "head", "residual"):
        return tag
    if tag == HEAD_DIM_SCOPE:
        return "attention"
    return "block"


def _describe(tag: str) -> str:
    if tag.startswith("stage"):
        return f"every group of {tag} (position scope: multiplies with the kind scopes)"
    fam, _, role = tag.partition(".")
    what = {"mlp": "MLP hidden width", "se": "squeeze-excitation width", "inner": "inner width"}.get(role, role)
    return f"{what} inside {fam} blocks"
