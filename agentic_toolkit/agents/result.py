"""The outcome of an agentic search: the best pruned model and the history that led to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch.nn as nn

from ..pruning.strategy import Strategy
from ..units import format_macs
from .decisions import proposer_label
from .history import history_frame
from .incumbent import DEFAULT_EVAL_IMAGES, NOISE_K, beats, record_se
from .keys import shape_key


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


def default_record(records: list[dict], base_strategy: Strategy | dict | None) -> dict | None:
    """The first scored in-band revision of the base strategy's shape (any ratio), or None.

    With the analyst that is revision 1 (it proposes the base strategy first); its score is
    what the default strategy reaches at this budget.
    """
    if base_strategy is None:
        return None
    key = shape_key(base_strategy)
    for r in records:
        s = r.get("strategy") or r.get("proposed")
        if r.get("in_band") and r.get("score") is not None and isinstance(s, dict) and shape_key(s) == key:
            return r
    return None


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

    What the search bought: ``score`` ± ``score_se`` (binomial standard error on
    ``eval_images`` scored images; 0 for a score that is not a percentage) is the incumbent's
    (a candidate kept only when it beat the one before by more than 2 SE), ``default_score``
    ± ``default_se`` that of the base strategy at the same budget (``default_revision``,
    revision 1 with the analyst), ``gain`` = score - default_score and ``gain_significant``
    whether it exceeds 2 SE of the default (None when the default was not scored).

    Args:
        converged: a candidate landed in the band.
        model, strategy, macs, params, score: the best candidate (None without one).
        revisions: how many revisions ran; ``best_revision`` / ``first_in_band`` which.
        history, records: the revision table and the raw records.
        target_macs, base_macs, tolerance, counter: the target, the unpruned count, the band
            and the MAC convention they are in.
        stop_reason: why the Master stopped; ``backend`` who proposed; ``log_path`` the history file.

    Returns:
        :meth:`summary` (one line), :meth:`to_dict` (JSON-ready), :meth:`to_frame` (the history).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> _ = torch.manual_seed(0)  # a random-init model: seeded, so the example's numbers hold
        >>> res = at.run_agentic_pruning(at.create_model("cifar_resnet20"), "50%", torch.randn(1, 3, 32, 32),
        ...                              tolerance=(2, 2), max_revisions=1, progress=False)
        >>> res.macs < res.base_macs, res.to_frame()["revision"].tolist()
        (True, [1])
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
    counter: str = "macs"  # the MAC convention of target_macs, base_macs and macs
    log_path: str | None = None
    records: list[dict] = field(default_factory=list, repr=False)
    proposers: str = ""
    llm_tokens: int | None = None
    llm_input_tokens: int | None = None
    llm_output_tokens: int | None = None
    llm_seconds: float | None = None
    score_se: float | None = None
    eval_images: int | None = None
    default_revision: int | None = None
    default_score: float | None = None
    default_se: float | None = None
    gain: float | None = None
    gain_significant: bool | None = None

    @classmethod
    def gain_fields(
        cls, records: list[dict], best: dict | None, score: float | None, base_strategy=None,
        default_images: int = DEFAULT_EVAL_IMAGES,
    ) -> dict:
        """What the search bought (constructor keywords): the best ``score`` ± ``score_se``,
        the default strategy's (:func:`default_record`) ``default_score`` ± ``default_se``,
        ``gain`` = best - default and ``gain_significant`` (gain > 2 SE of the default).

        Standard errors are binomial on the records' ``eval_images`` (``default_images``
        when absent); 0 for a score outside 0..100 (no noise model).
        """
        out: dict = {}
        if best is None or score is None:
            return out
        n = best.get("eval_images")
        out["eval_images"] = int(n) if isinstance(n, int) else None
        out["score_se"] = round(record_se({"score": score, "eval_images": n}, default_images), 6)
        ref = default_record(records, base_strategy)
        if ref is not None:
            d_se = record_se(ref, default_images)
            gain = float(score) - float(ref["score"])
            out.update(default_revision=ref["revision"], default_score=ref["score"], default_se=round(d_se, 6),
                       gain=round(gain, 6), gain_significant=bool(beats(score, ref["score"], d_se, NOISE_K)))
        return out

    @classmethod
    def from_search(cls, search, best: dict | None, model, score: float | None) -> SearchResult:
        """The result of ``search`` (an :class:`~agentic_toolkit.AgenticSearch`, read, not
        changed) so far: ``best`` its best revision record, ``model`` and ``score`` that
        revision's model as scored and its score (None without a best revision)."""
        revs = search.records
        return cls(
            converged=bool(best is not None and best.get("in_band")),
            model=model,
            strategy=Strategy.from_dict(best["strategy"]) if best is not None else None,
            macs=int(best["achieved_macs"]) if best is not None else None,
            params=best.get("params") if best is not None else None,
            score=score, revisions=len(revs), history=history_frame(revs),
            target_macs=search.target_macs, base_macs=search.base_macs, tolerance=search.tolerance,
            best_revision=best["revision"] if best is not None else None,
            first_in_band=next((r["revision"] for r in revs if r.get("in_band")), None),
            stop_reason=search.stop_reason or "", backend=search.engine.name, counter=search.counter,
            log_path=str(search.log.path) if search.log.path else None, records=list(revs),
            **cls.usage_fields(revs),
            **cls.gain_fields(revs, best, score, search.base_strategy, search.eval_images),
        )

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
            "score_se": self.score_se,
            "eval_images": self.eval_images,
            "default_revision": self.default_revision,
            "default_score": self.default_score,
            "default_se": self.default_se,
            "gain": self.gain,
            "gain_significant": self.gain_significant,
            "revisions": self.revisions,
            "first_in_band": self.first_in_band,
            "best_revision": self.best_revision,
            "stop_reason": self.stop_reason,
            "backend": self.backend,
            "counter": self.counter,
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
        if self.score is not None and self.score_se:
            score += f" ± {self.score_se:.2g}"
        if self.gain is not None:
            rev = "" if self.default_revision is None else f" (revision {self.default_revision})"
            se = f" ± {self.default_se:.2g}" if self.default_se else ""
            noise = f"> {NOISE_K:g}·SE" if self.gain_significant else f"within {NOISE_K:g}·SE"
            score += f" vs default{rev} {self.default_score:.4g}{se}: gain {self.gain:+.3g} ({noise})"
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


__all__ = ["SearchResult", "default_record", "llm_usage", "proposer_mix"]
