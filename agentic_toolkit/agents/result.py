"""The outcome of an agentic search: the best pruned model and the history that led to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..pruning.strategy import Strategy
from ..units import format_macs
from .decisions import proposer_label


def proposer_mix(records: list[dict]) -> str:
    """Who proposed the revisions, e.g. ``"openai ×3, analyst ×2 (fallback)"`` (first seen first)."""
    counts: dict[str, int] = {}
    for r in records:
        label = proposer_label(r)
        counts[label] = counts.get(label, 0) + 1
    parts = []
    for label, n in counts.items():
        name, _, reason = label.partition(" (")
        parts.append(f"{name} ×{n}" + (f" ({reason}" if reason else ""))
    return ", ".join(parts)


def llm_usage(records: list[dict]) -> dict:
    """Summed ``llm_input_tokens``, ``llm_output_tokens``, ``llm_tokens`` and ``llm_seconds``.

    Each is None when no revision reports it (no language model was asked).
    """
    out: dict = {}
    for key in ("llm_input_tokens", "llm_output_tokens", "llm_seconds"):
        vals = [r[key] for r in records if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
        out[key] = (round(sum(vals), 3) if key == "llm_seconds" else int(sum(vals))) if vals else None
    known = [out[k] for k in ("llm_input_tokens", "llm_output_tokens") if out[k] is not None]
    out["llm_tokens"] = sum(known) if known else None
    return out


@dataclass
class SearchResult:
    """Outcome of :class:`~agentic_toolkit.AgenticSearch` / :func:`~agentic_toolkit.run_agentic_pruning`.

    ``model`` is the best pruned model (in band with the best score; without an in-band
    candidate the one closest to the target, and ``converged`` is False), as the evaluator
    scored it (e.g. with re-estimated BatchNorm statistics), so ``evaluator(model) == score``.
    ``history`` is the revision table (also :meth:`to_frame`), ``records`` the raw revision
    records. ``proposers`` says who proposed the revisions (``"openai ×3, analyst ×2
    (fallback)"``); ``llm_tokens`` (input + output), ``llm_input_tokens``,
    ``llm_output_tokens`` and ``llm_seconds`` sum the language-model requests (None without).
    """

    converged: bool
    model: nn.Module | None
    strategy: Strategy | None
    macs: int | None
    params: int | None
    score: float | None
    revisions: int
    history: Any  # pandas.DataFrame, one row per revision
    target_macs: int
    base_macs: int
    tolerance: tuple[float, float]
    best_revision: int | None = None
    first_in_band: int | None = None
    stop_reason: str = ""
    backend: str = ""
    log_path: str | None = None
    records: list[dict] = field(default_factory=list, repr=False)
    proposers: str = ""
    llm_tokens: int | None = None
    llm_input_tokens: int | None = None
    llm_output_tokens: int | None = None
    llm_seconds: float | None = None

    @classmethod
    def usage_fields(cls, records: list[dict]) -> dict:
        """``proposers`` and the ``llm_*`` totals of these revision records (constructor keywords)."""
        return {"proposers": proposer_mix(records), **llm_usage(records)}

    @property
    def error_pct(self) -> float | None:
        """Achieved MACs vs target, in percent (negative: under the target)."""
        return None if self.macs is None else 100.0 * (self.macs - self.target_macs) / self.target_macs

    def to_dict(self) -> dict:
        """JSON-ready summary (no model, no prompts)."""
        return {
            "converged": self.converged,
            "target_macs": self.target_macs,
            "achieved_macs": self.macs,
            "base_macs": self.base_macs,
            "error_pct": None if self.error_pct is None else round(self.error_pct, 4),
            "params": self.params,
            "score": self.score,
            "revisions": self.revisions,
            "first_in_band": self.first_in_band,
            "best_revision": self.best_revision,
            "stop_reason": self.stop_reason,
            "backend": self.backend,
            "proposers": self.proposers,
            "llm_tokens": self.llm_tokens,
            "llm_input_tokens": self.llm_input_tokens,
            "llm_output_tokens": self.llm_output_tokens,
            "llm_seconds": self.llm_seconds,
            "tolerance": list(self.tolerance),
            "strategy": None if self.strategy is None else self.strategy.to_dict(),
            "log_path": self.log_path,
        }

    def to_frame(self):
        """The revision history as a pandas DataFrame (one row per revision)."""
        return self.history

    def summary(self) -> str:
        """One paragraph for a notebook or the CLI."""
        if self.macs is None:
            who = f", proposed by {self.proposers}" if self.proposers else ""
            return f"no candidate could be measured in {self.revisions} revision(s){who} ({self.stop_reason})"
        state = "converged" if self.converged else "did NOT converge"
        score = f", score {self.score:.4g}" if self.score is not None else ""
        who = f"; proposed by {self.proposers}" if self.proposers else ""
        llm = ""
        if self.llm_tokens is not None or self.llm_seconds is not None:
            tokens = f"{self.llm_tokens} tokens, " if self.llm_tokens is not None else ""
            llm = f" (LLM: {tokens}{self.llm_seconds or 0:.1f} s)"
        return (
            f"{state}: {format_macs(self.macs)} MACs vs target {format_macs(self.target_macs)} "
            f"({self.error_pct:+.2f}%) after {self.revisions} revision(s), best at revision "
            f"{self.best_revision}{score}{who}{llm}; stop: {self.stop_reason}"
        )

    def plot(self, ax=None, title: str | None = None):
        """The MAC error (and score, when scored) per revision with the band shaded; returns the figure."""
        from ..plots import plot_convergence

        title = title or f"Agent search ({self.backend}): {format_macs(self.target_macs)} MACs target"
        return plot_convergence(self.to_frame(), self.tolerance, ax=ax, title=title)


__all__ = ["SearchResult", "llm_usage", "proposer_mix"]
