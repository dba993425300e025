"""The offline Analysis agent: deterministic, no key, learns from the search history.

Ratio. MACs are modelled as a function of the global ratio ``r`` and the multipliers::

    MACs(r) = c * base * [ rest * (1 - r*K)^p + sum_s share_s * (1 - min(r * m_s * K, cap))^p ]

over the position scopes ``s`` (kind ``stage``; ``share_s`` their normalised MAC shares
from ``describe_scopes``, ``rest`` the remainder), with ``K`` the share-weighted mean of the
overlapping kind scopes' multipliers (residual stream, block inner widths, attention).
With no history ``p = 2`` (a layer's MACs fall with both its input and its output width)
and ``c = 1``; one measured attempt fixes ``p``; two fix ``p`` and ``c``. The next ratio
solves ``MACs(r) = middle of the band``; once attempts with the same multipliers bracket
the band the ratio stays inside the bracket (regula falsi in log-MACs), so the search
cannot diverge on a monotone MAC curve.

Multipliers. The first proposal prunes the position scopes with a high MAC share a little
more (``(share / mean share) ** 0.15``, within [0.8, 1.2]). With an evaluator, once a
candidate is in band the analyst explores: it protects one scope at a time (multiplier
x 0.75; most-pruned scopes first), keeps a change when the score improved and reverts it
otherwise -- a coordinate search over the per-scope sensitivity read from the history.
"""

from __future__ import annotations

import json
import math

from ...pruning.strategy import Strategy
from ...units import format_macs
from .base import PlannerBackend, ProposalContext

P_RANGE = (0.05, 8.0)


def scope_shares(scopes) -> dict[str, float]:
    """``{scope name: share of baseline MACs}`` for every scope with a positive share."""
    if scopes is None or len(scopes) == 0 or "mac_share" not in scopes:
        return {}
    shares = {}
    for name, share in zip(scopes["name"], scopes["mac_share"], strict=True):
        try:
            share = float(share)
        except (TypeError, ValueError):
            continue
        if math.isfinite(share) and share > 0:
            shares[str(name)] = share
    return shares


def scope_kinds(scopes) -> dict[str, str]:
    """``{scope name: kind}`` (``"stage"`` when the table has no kind column)."""
    if scopes is None or len(scopes) == 0:
        return {}
    kinds = scopes["kind"] if "kind" in scopes else ["stage"] * len(scopes)
    return {str(n): str(k) for n, k in zip(scopes["name"], kinds, strict=True)}


class MacModel:
    """The analyst's picture of where the MACs are.

    Position scopes (kind ``stage``) partition the model (their shares, normalised to
    sum <= 1, are the partition; the rest is pruned at the global ratio); the other scopes
    (residual stream, block inner widths, attention) overlap the positions, so their
    multipliers enter as one share-weighted factor on every position.
    """

    def __init__(self, shares: dict[str, float], kinds: dict[str, str]):
        stages = {n: s for n, s in shares.items() if kinds.get(n, "stage") == "stage"}
        total = sum(stages.values())
        self.partition = {n: s / total for n, s in stages.items()} if total > 1 else dict(stages)
        self.rest = max(0.0, 1.0 - sum(self.partition.values()))
        self.overlay = {n: s for n, s in shares.items() if n not in stages}

    def kept(self, ratio: float, multipliers: dict, p: float, cap: float) -> float:
        """Modelled fraction of the baseline MACs kept (before the fitted scale ``c``)."""
        weight = sum(self.overlay.values())
        k = 1.0
        if weight > 0:
            k = sum(s * float(multipliers.get(n, 1.0)) for n, s in self.overlay.items()) / weight
        out = self.rest * (1.0 - min(ratio * k, cap)) ** p
        for name, share in self.partition.items():
            r = min(ratio * float(multipliers.get(name, 1.0)) * k, cap)
            out += share * (1.0 - r) ** p
        return max(out, 1e-12)


def _bisect(f, lo: float, hi: float, iters: int = 80) -> float | None:
    """A root of a function that changes sign on [lo, hi], or None."""
    flo, fhi = f(lo), f(hi)
    if flo == 0:
        return lo
    if fhi == 0:
        return hi
    if (flo > 0) == (fhi > 0):
        return None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        fm = f(mid)
        if (fm > 0) == (flo > 0):
            lo, flo = mid, fm
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _mkey(multipliers: dict) -> str:
    return json.dumps({k: round(float(v), 4) for k, v in sorted(multipliers.items())})


class AnalystBackend(PlannerBackend):
    """Deterministic history-fitting proposer (see the module docstring)."""

    name = "analyst"

    def __init__(
        self,
        prior_exponent: float = 2.0,
        share_exponent: float = 0.15,
        multiplier_range: tuple[float, float] = (0.8, 1.2),
        protect_factor: float = 0.75,
        explore_scopes: int = 4,
        max_ratio: float = 0.95,
    ):
        self.prior_exponent = float(prior_exponent)
        self.share_exponent = float(share_exponent)
        self.multiplier_range = tuple(float(x) for x in multiplier_range)
        self.protect_factor = float(protect_factor)
        self.explore_scopes = int(explore_scopes)
        self.max_ratio = float(max_ratio)

    def describe(self) -> dict:
        return {"backend": self.name, "prior_exponent": self.prior_exponent}

    # --- multipliers -------------------------------------------------------------------
    def initial_multipliers(self, shares: dict[str, float], kinds: dict[str, str] | None = None) -> dict[str, float]:
        """Prune high-MAC-share positions a little more: ``(share / mean share) ** 0.15``, clipped.

        Only position scopes (kind ``stage``) get one, so that the products with the
        overlapping kind scopes stay mild.
        """
        kinds = kinds or {}
        shares = {n: s for n, s in shares.items() if kinds.get(n, "stage") == "stage"}
        if len(shares) < 2 or self.share_exponent == 0:
            return {}
        mean = sum(shares.values()) / len(shares)
        lo, hi = self.multiplier_range
        out = {}
        for name, share in shares.items():
            m = min(hi, max(lo, (share / mean) ** self.share_exponent))
            if abs(m - 1.0) >= 0.005:
                out[name] = round(m, 3)
        return out

    def _choose_multipliers(self, ctx: ProposalContext, shares: dict, kinds: dict) -> tuple[dict, str]:
        valid = set(ctx.scope_names())
        records = [r for r in ctx.history if r.get("strategy")]
        initial = self.initial_multipliers(shares, kinds)
        if not records:
            why = "multipliers from MAC share" if initial else "uniform multipliers"
            return initial, why
        last = records[-1]
        last_mult = {k: v for k, v in last["strategy"].get("multipliers", {}).items() if k in valid}
        failed = {_mkey(r["strategy"].get("multipliers", {})) for r in records if r.get("error")}
        scored = [r for r in records if r.get("in_band") and r.get("score") is not None]
        if not last.get("error") and not last.get("in_band"):
            return last_mult, "keep the last multipliers, correct the ratio"
        if not scored:
            if last.get("error"):
                fallback = initial if _mkey(initial) not in failed else {}
                return fallback, "the last strategy failed: " + (
                    "back to MAC-share multipliers" if fallback else "uniform multipliers"
                )
            return last_mult, "keep the last multipliers"
        # exploration around the best-scoring in-band strategy
        best = max(scored, key=lambda r: (r["score"], -r["revision"]))
        incumbent = {k: v for k, v in best["strategy"].get("multipliers", {}).items() if k in valid}
        tried = {_mkey(r["strategy"].get("multipliers", {})) for r in scored} | failed
        ratio = float(best["strategy"]["pruning_ratio"])
        # protecting a scope is a move; "heads" scopes are left alone (a multiplier there
        # switches on whole-head pruning, i.e. prunes more)
        movable = [n for n in shares if kinds.get(n, "stage") != "heads"]
        order = sorted(movable, key=lambda s: (-ratio * incumbent.get(s, 1.0), -shares[s], s))[: self.explore_scopes]
        for s in order:
            move = dict(incumbent)
            move[s] = round(max(0.05, incumbent.get(s, 1.0) * self.protect_factor), 4)
            if _mkey(move) not in tried:
                return move, (
                    f"explore: protect '{s}' (multiplier {incumbent.get(s, 1.0):.3g} -> {move[s]:.3g}) "
                    f"around the best candidate so far (revision {best['revision']}, score {best['score']:.4g})"
                )
        return incumbent, "no untried move left around the best candidate"

    # --- ratio -----------------------------------------------------------------------------
    def _fit(self, points, mm: MacModel, cap, base) -> tuple[float, float, str]:
        """Fit (p, c) to measured points [(ratio, multipliers, macs)], newest last."""
        p0 = self.prior_exponent
        if not points:
            return p0, 1.0, f"prior exponent p={p0:g}"
        r1, m1, y1 = points[-1]
        second = next(
            (pt for pt in reversed(points[:-1]) if abs(pt[0] - r1) > 1e-6 or _mkey(pt[1]) != _mkey(m1)), None
        )
        if second is not None:
            r2, m2, y2 = second

            def g(p):
                k1, k2 = mm.kept(r1, m1, p, cap), mm.kept(r2, m2, p, cap)
                return math.log(k1 / k2) - math.log(y1 / y2)

            p = _bisect(g, *P_RANGE)
            if p is not None:
                c = y1 / (base * mm.kept(r1, m1, p, cap))
                return p, c, f"p={p:.3g}, c={c:.3g} fitted to the last two attempts"
        target = y1 / base
        p = _bisect(lambda q: mm.kept(r1, m1, q, cap) - target, *P_RANGE)
        if p is None:
            return p0, y1 / (base * mm.kept(r1, m1, p0, cap)), f"p={p0:g}, scale fitted"
        return p, 1.0, f"p={p:.3g} fitted to the last attempt"

    def _solve_ratio(self, ctx, multipliers, mm: MacModel, cap) -> tuple[float, str]:
        base, aim = float(ctx.base_macs), ctx.aim_macs
        low, high = ctx.band
        points = [
            (float(r["strategy"]["pruning_ratio"]), r["strategy"].get("multipliers", {}), float(r["achieved_macs"]))
            for r in ctx.history
            if r.get("achieved_macs") and r.get("strategy")
        ]
        p, c, how = self._fit(points, mm, cap, base)
        hi_r = self.max_ratio

        def f(r):
            return c * base * mm.kept(r, multipliers, p, cap) - aim

        r = _bisect(f, 0.0, hi_r)
        if r is None:
            r = 0.0 if f(0.0) < 0 else hi_r
        notes = [f"MACs(r) = c*base*sum share*(1-r*m)^p with {how}"]
        # safeguard: stay inside the bracket of attempts with these multipliers
        key = _mkey(multipliers)
        same = [(pr, y) for pr, m, y in points if _mkey(m) == key]
        above = [(pr, y) for pr, y in same if y > high]  # too many MACs: need a larger ratio
        below = [(pr, y) for pr, y in same if y < low]  # too few: need a smaller ratio
        if above and below:
            ra, ya = max(above)
            rb, yb = min(below)
            if ra < rb and not ra < r < rb:
                t = (math.log(ya) - math.log(aim)) / (math.log(ya) - math.log(yb))
                r = ra + min(max(t, 0.1), 0.9) * (rb - ra)
                notes.append(f"kept inside the bracket ({ra:.4f}, {rb:.4f}) by regula falsi")
        elif above and r <= max(above)[0]:
            r = min(hi_r, max(above)[0] + 0.02)
            notes.append("moved above the largest ratio that left too many MACs")
        elif below and r >= min(below)[0]:
            r = max(0.0, min(below)[0] - 0.02)
            notes.append("moved below the smallest ratio that left too few MACs")
        tried = {round(pr, 4) for pr, _ in same}
        if round(r, 4) in tried:  # a repeat teaches nothing: nudge toward the aim
            r = min(hi_r, max(0.0, r + (0.005 if f(r) > 0 else -0.005)))
            notes.append("nudged off a ratio already tried")
        return round(r, 4), "; ".join(notes)

    # --- entry point -------------------------------------------------------------------------
    def propose(self, ctx: ProposalContext) -> tuple[Strategy, str]:
        shares, kinds = scope_shares(ctx.scopes), scope_kinds(ctx.scopes)
        multipliers, why_m = self._choose_multipliers(ctx, shares, kinds)
        base = ctx.base_strategy
        cap = float(base.max_layer_ratio)
        ratio, why_r = self._solve_ratio(ctx, multipliers, MacModel(shares, kinds), cap)
        strategy = base.replace(pruning_ratio=ratio, multipliers=multipliers)
        low, high = ctx.band
        rationale = (
            f"Aim at {format_macs(ctx.aim_macs)} MACs (band {format_macs(low)}-{format_macs(high)}, "
            f"baseline {format_macs(ctx.base_macs)}). {why_m}. Ratio {ratio:.4f}: {why_r}."
        )
        if ctx.solve_budget:
            rationale += " The budget solver will refine the ratio."
        return strategy, rationale
