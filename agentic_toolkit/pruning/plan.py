"""A reusable pruning plan: the model's channel groups, importance and MAC model, built once.

Building the dependency graph and scoring channels is the expensive part of pruning; the
ratio only decides how many of the (already ranked) channels each group loses. A
:class:`PrunePlan` therefore does the expensive work once and then

- :meth:`PrunePlan.select` turns a strategy and ratio into per-group cut counts
  (global ranking within each ranking scope, ``max_layer_ratio`` caps, ``round_to``),
- :meth:`PrunePlan.predict_macs` gives the exact MACs of that selection from the widths
  (``counter="torch_pruning"``: torch-pruning's count, see :class:`.mac_model.TpMacModel`),
- :meth:`PrunePlan.apply` prunes a copy (or the model itself) to exactly that selection.

The plan never changes the model it was built from: the graph is traced in eval mode
(mode restored), Taylor gradients are restored afterwards, and :meth:`apply` works on a
deep copy unless ``inplace=True``.

The class is assembled from three modules by job: this one builds the plan and checks
strategies against it; :mod:`.ranking` (importance, ranking scopes, selection, MACs) and
:mod:`.cutting` (index maps, cutting, forward-pass validation) hold the rest; model
copies and input helpers are in :mod:`.model_utils`.
"""

from __future__ import annotations

import fnmatch
import warnings

import pandas as pd
import torch.nn as nn
import torch_pruning as tp

from ..errors import ToolkitError
from ..inputs import check_model_inputs, input_mismatch
from . import scopes as _scopes
from .attention import find_attention, num_heads_map
from .cutting import CuttingMixin
from .groups import (
    ChannelGroup,
    GraphTimeout,
    build_graph,
    collect_groups,
    graph_time_limit,
    time_limit,
)
from .mac_model import Key, MacModel, TpMacModel
from .model_utils import as_inputs, classifier_names, input_shape, is_under
from .ranking import RankingMixin, Selection
from .strategy import Strategy, StrategyError

__all__ = ["NothingToPruneError", "PrunePlan", "Selection", "classifier_names", "input_shape"]


class NothingToPruneError(ToolkitError, ValueError):
    """Every channel group of the model is protected or cannot be pruned."""


class PrunePlan(RankingMixin, CuttingMixin):
    """Channel groups, importance and MAC model of one model (see module docstring).

    Build with :meth:`PrunePlan.build` (arguments: the model, an example input and optional
    calibration batches); reuse it across ratios and strategies of the same model
    (``fit_to_budget`` and ``apply_isomorphic_prune`` accept ``plan=``).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model, x = at.create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)
        >>> plan = at.PrunePlan.build(model, x)
        >>> sel = plan.select(at.Strategy(pruning_ratio=0.5))
        >>> plan.predict_macs(sel) == at.apply_isomorphic_prune(model, at.Strategy(pruning_ratio=0.5), x,
        ...                                                     plan=plan).macs
        True
    """

    def __init__(self) -> None:  # use PrunePlan.build
        self.stale = False

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, model: nn.Module, example_inputs, calibration=None) -> PrunePlan:
        """Trace ``model`` once and record its channel groups and base MAC profile."""
        from ..profiling.profile import profile_macs

        if not isinstance(model, nn.Module):
            raise ToolkitError(f"expected a torch.nn.Module, got {type(model).__name__}")
        check_model_inputs(model, example_inputs)
        self = cls()
        self.source = model
        self.example_inputs = as_inputs(example_inputs)
        self.input_shape = input_shape(self.example_inputs)
        self.calibration = list(calibration) if calibration is not None else None
        self.attention = find_attention(model)
        heads = num_heads_map(model, self.attention)
        modules = dict(model.named_modules())
        attn_of = {modules[a.name].qkv: (a.name, a.heads_prunable) for a in self.attention if not a.reason}
        params = dict(model.named_parameters())
        tables = [params[n] for a in self.attention for n in a.head_tables if n in params]
        limit = graph_time_limit(model)
        try:
            with time_limit(limit):
                self.graph = build_graph(model, self.example_inputs, tables)
                self.groups, full_groups = collect_groups(model, self.graph, heads, attn_of)
        except GraphTimeout:
            raise NothingToPruneError(
                f"torch-pruning did not finish grouping the channels of {type(model).__name__} within "
                f"{limit:.0f} CPU seconds (it loops on some graphs, e.g. ReXNet's sliced residual adds); "
                "this architecture cannot be pruned by agentic_toolkit"
            ) from None
        except Exception as exc:
            why = input_mismatch(model, self.example_inputs)
            raise ToolkitError(
                (f"{why}. " if why else "")
                + f"torch-pruning cannot trace {type(model).__name__} on inputs of shape {self.input_shape}: "
                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            ) from exc
        self._tp_groups: dict[int, object] = {g.index: f for g, f in zip(self.groups, full_groups, strict=True)}
        self._maps: dict[int, list] = {}  # group index -> its members' index maps
        self._record_groups()
        _scopes.tag_groups(model, self.groups)
        self._protect_fixed(model)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            profile = profile_macs(model, example_inputs=self.example_inputs)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        self.base_macs = int(profile.total_macs)
        self.base_params = int(profile.params)
        self.sizes = self._sizes()
        prunable_keys = {(m.name, m.is_out) for g in self.groups if g.prunable for m in g.members}
        self.prunable_keys = prunable_keys
        self.mac_model = MacModel(model, profile.layers, profile.total_macs, self.sizes, prunable_keys)
        self._tp_model: TpMacModel | None = None  # built on first use (mac_model_for)
        self._validate()
        self._importance: dict[str, tuple] = {}  # criterion name -> (criterion, scores, notes)
        self._scopes_cache: dict[tuple, tuple] = {}  # strategy shape -> (criterion, scopes)
        self._ignored_cache: dict[tuple, set[str]] = {}
        return self

    def _protect_fixed(self, model: nn.Module) -> None:
        """Classifier, model outputs and attention we cannot prune are never pruned."""
        classifier = set(classifier_names(model))
        self.classifier = sorted(classifier)
        bad_attn = {a.name: a.reason for a in self.attention if a.reason}
        for g in self.groups:
            if g.unsupported:
                continue
            full = self._tp_groups[g.index]
            outs = [m.name for m in g.members if m.is_out]
            if any(is_under(n, classifier) for n in outs):
                g.protected_by = "classifier"
            elif any(d.target.type == tp.ops.OPTYPE.OUTPUT for d, _ in full):
                g.protected_by = "model output"
            else:
                for n in outs:
                    for a, reason in bad_attn.items():
                        if n.startswith(a + "."):
                            g.protected_by = f"attention {a}: {reason}"

    def _sizes(self) -> dict[Key, int]:
        sizes = {}
        modules = dict(self.source.named_modules())
        params = dict(self.source.named_parameters())
        for g in self.groups:
            for mm in self._maps[g.index]:
                name, is_out = mm.member.name, mm.member.is_out
                target = params[name] if mm.is_param else modules[name]
                pruner = self.graph.get_pruner_of_module(target)
                if pruner is None:
                    continue
                pruner.pruning_dim = mm.pruning_dim  # shared by parameters/norms; torch-pruning sets it per call
                size = pruner.get_out_channels(target) if is_out else pruner.get_in_channels(target)
                if size is not None:
                    sizes[(name, is_out)] = int(size)
        return sizes

    # ------------------------------------------------------------------ counters
    def mac_model_for(self, counter: str = "macs") -> MacModel | TpMacModel:
        """The MAC model of ``counter``: ``"macs"`` (default convention) or
        ``"torch_pruning"`` (``count_ops_and_params``; built on first use, one counted pass)."""
        from ..profiling.profile import CONVENTIONS

        if counter not in CONVENTIONS:
            raise ToolkitError(f"unknown MAC counter {counter!r}; use one of {', '.join(CONVENTIONS)}")
        if counter == "macs":
            return self.mac_model
        if getattr(self, "_tp_model", None) is None:
            self._check_usable()
            self._tp_model = TpMacModel(self.source, self.example_inputs, self.sizes, self.prunable_keys)
        return self._tp_model

    def base_count(self, counter: str = "macs") -> int:
        """MACs of the unpruned model in ``counter``'s convention (per forward pass of the
        example inputs for ``"macs"``, per sample for ``"torch_pruning"``)."""
        return self.base_macs if counter == "macs" else int(self.mac_model_for(counter).base)

    # ------------------------------------------------------------------ scopes
    def scope_names(self) -> list[str]:
        """Scope names usable in ``Strategy.multipliers`` for this model."""
        names = {t for g in self.groups if g.prunable for t in g.tags}
        if any(g.prunable and g.attention and g.heads_prunable for g in self.groups):
            names.add(_scopes.HEADS_SCOPE)
        return sorted(names, key=_scopes._natural)

    def group_scopes(self) -> dict[str, ChannelGroup]:
        """Per-group multiplier keys (``"group:<root layer>"``) of the prunable groups."""
        return {_scopes.group_scope(g): g for g in self.groups if g.prunable}

    def group_layers(self) -> dict[int, set[str]]:
        """Per group index: the MAC-model layers whose width the group changes."""
        out = {}
        for g in self.groups:
            keys = {(m.name, m.is_out) for m in g.members}
            out[g.index] = {r.name for r in self.mac_model.rows if keys.intersection(r.keys)}
        return out

    def scope_layers(self) -> dict[str, set[str]]:
        """Per scope (the names :meth:`describe` lists): the MAC-model layers whose width it changes."""
        return _scopes.scope_layers(self.groups, self.group_layers())

    def describe(self) -> pd.DataFrame:
        """Scope table (see :func:`agentic_toolkit.describe_scopes`)."""
        row_macs = {r.name: r.macs for r in self.mac_model.rows}
        df = _scopes.scope_table(self.groups, self.group_layers(), row_macs, self.base_macs)
        df.attrs["not_prunable"] = self.not_prunable()
        df.attrs["base_macs"] = self.base_macs
        return df

    def not_prunable(self) -> list[str]:
        """Groups that are kept, and why (classifier, model output, unsupported reshape...)."""
        out = []
        for g in self.groups:
            why = g.unsupported or g.protected_by
            if why:
                out.append(f"{g.root_name} ({g.channels} channels): {why}")
        return out

    # ------------------------------------------------------------------ strategy checks
    def check_strategy(self, strategy: Strategy) -> None:
        """Raise a clear error for multipliers naming unknown scopes or patterns that
        leave nothing to prune."""
        if not isinstance(strategy, Strategy):
            raise ToolkitError(f"strategy must be an agentic_toolkit.Strategy, got {type(strategy).__name__}")
        available = self.scope_names()
        unknown = [
            k for k in strategy.multipliers
            if k not in available and not (k.startswith(_scopes.GROUP_PREFIX) and k in self.group_scopes())
        ]
        if unknown:
            raise StrategyError(
                [
                    f"unknown scope '{k}' in multipliers; this model's scopes are: {', '.join(available)}"
                    for k in unknown
                ]
            )
        if not self._candidates(strategy):
            if not any(g.prunable for g in self.groups):
                why = "; ".join(self.not_prunable()[:6])
                raise NothingToPruneError(
                    f"{type(self.source).__name__} has no channel group that can be pruned safely ({why})"
                )
            raise NothingToPruneError(
                f"the ignored patterns {strategy.ignored} protect every prunable layer; "
                "nothing would be pruned. Remove or narrow some patterns."
            )

    def _ignored_names(self, strategy: Strategy) -> set[str]:
        if not strategy.ignored:
            return set()
        key = tuple(strategy.ignored)
        if key in self._ignored_cache:
            return self._ignored_cache[key]
        names = [n for n, _ in self.source.named_modules() if n] + [n for n, _ in self.source.named_parameters()]
        hit = {n for n in names if any(fnmatch.fnmatchcase(n, p) for p in strategy.ignored)}
        unmatched = [p for p in strategy.ignored if not any(fnmatch.fnmatchcase(n, p) for n in names)]
        if unmatched:
            warnings.warn(f"ignored patterns match no module: {unmatched}", stacklevel=4)
        self._ignored_cache[key] = hit
        return hit

    def _candidates(self, strategy: Strategy) -> list[ChannelGroup]:
        ignored = self._ignored_names(strategy)
        return [
            g
            for g in self.groups
            if g.prunable and not any(is_under(m.name, ignored) for m in g.members if m.is_out)
        ]
