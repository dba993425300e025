"""The offline Analysis agent: deterministic, no key, explores strategy shapes from the history.

Exploration (the shape). The budget (the ratio) is the solver's job; what decides accuracy
is the shape: importance criterion, grouping and per-scope multipliers. Revision 1 is the
base strategy as given, so that its score is the reference. Each later revision makes one
move from the *incumbent* -- the strategy to build on: the reference, replaced only by a
candidate that beats it by more than two standard errors of the proxy score
(:func:`~agentic_toolkit.agents.incumbent.replay`; the rationale says "kept: +3.1 > 2·SE
2.0" or "not kept: +0.8 within noise"). Moves, in this order of preference:

0. follow-up: a scope whose last move was kept moves again the same way, a smaller step
   (protected further x0.75, or released further x1.25);
1. reversal: a scope whose protection clearly cost score is released (x1.25); one whose
   release clearly cost score is protected (x0.75);
2. probes of what was never tried, alternating a scope (protect x0.5; kind scopes such as
   ``residual`` and ``block.inner`` first, then positions, each by MAC share) and a
   structural move (importance ``taylor``, grouping ``global``, ``magnitude_l1``,
   ``uniform``, ``lamp``; grouping is ``isomorphic``, ``global`` = one ranking over all
   groups, ``uniform`` = every group alone);
3. second looks: the other direction of a scope whose move made no clear difference, a
   release probe (x1.25) of a scope never moved, and a criterion or grouping that was
   within noise, retried on a newer incumbent.

Directions that clearly cost score (or failed) from the current incumbent are never
repeated, and no shape already tried is proposed again (strategies compared without the
ratio; with the budget solver also up to one common factor on every kind scope, which only
rescales the solved ratio: :func:`~agentic_toolkit.agents.keys.solved_shape_key`). When no move is left the analyst proposes the incumbent again and says so; the
Master stops on a repeated proposal.

Ratio. MACs are modelled as a function of the global ratio ``r`` and the multipliers::

    MACs(r) = c * base * [ rest * (1 - r*K)^p + sum_s share_s * (1 - min(r * m_s * K, cap))^p ]

over the position scopes ``s`` (kind ``stage``; ``share_s`` their normalised MAC shares
from ``describe_scopes``, ``rest`` the remainder), with ``K`` the share-weighted mean of the
overlapping kind scopes' multipliers (residual stream, block inner widths, attention).
With no history ``p = 2`` and ``c = 1``; one measured attempt (of the same importance and
grouping when there is one) fixes ``p``; two fix ``p`` and ``c``. The next ratio solves
``MACs(r) = middle of the band``; once attempts of the same shape bracket the band the ratio
stays inside the bracket (regula falsi in log-MACs). With ``solve_budget`` the solver
refines the ratio; without it an out-of-band shape gets its ratio corrected (up to
``max_corrections`` attempts) before the exploration moves on.
"""

from __future__ import annotations

import math

from ...pruning.criteria import list_importances
from ...pruning.strategy import Strategy
from ...units import format_macs
from ..incumbent import DEFAULT_EVAL_IMAGES, NOISE_K, Step, replay
from ..keys import shape_key, solved_shape_key
from ..latency_view import SLOW, slowness
from ..moves import Trial, classify, grouping_of, record_shape, scope_moves, structural_moves
from .base import PlannerBackend, ProposalContext

P_RANGE = (0.05, 8.0)
#: Criteria and groupings the analyst probes, in this order (interleaved).
CRITERIA = ("taylor", "magnitude_l1", "lamp")
GROUPING_ORDER = ("global", "uniform")
#: Rationale of a proposal when nothing new is left (the proposal repeats the incumbent).
EXHAUSTED = "no untried move left"


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


def _latency_slowness(ctx: ProposalContext) -> dict[str, float]:
    """``{scope: latency_per_mac}`` when latency is budgeted and the scope table has it, else {}."""
    return slowness(ctx.scopes) if "latency" in (ctx.constraints or {}) else {}


def scope_kinds(scopes) -> dict[str, str]:
    """``{scope name: kind}`` (``"stage"`` when the table has no kind column)."""
    if scopes is None or len(scopes) == 0:
        return {}
    kinds = scopes["kind"] if "kind" in scopes else ["stage"] * len(scopes)
    return {str(n): str(k) for n, k in zip(scopes["name"], kinds, strict=True)}


class ShareMacModel:
    """The analyst's picture of where the MACs are, from the scopes' MAC shares.

    (Not :class:`agentic_toolkit.pruning.mac_model.MacModel`, which counts MACs layer by
    layer for the budget solver.)

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
    return shape_key({"multipliers": multipliers})


def _family(strategy: dict) -> tuple:
    return (strategy.get("importance"), grouping_of(strategy))


def scope_families(scopes, kinds: dict) -> tuple[list[str], list[str]]:
    """``(kind scopes, stage scopes)``; the stages only when they hold as many groups as the
    kinds (every group has one kind tag, so then every group has a stage tag too)."""
    kind_scopes = [n for n, k in kinds.items() if k not in ("stage", "heads")]
    stage_scopes = [n for n, k in kinds.items() if k == "stage"]
    if scopes is None or "groups" not in scopes:
        return kind_scopes, []
    groups = dict(zip(map(str, scopes["name"]), scopes["groups"], strict=True))
    total = sum(int(groups[n]) for n in kind_scopes)
    return kind_scopes, stage_scopes if total and sum(int(groups[n]) for n in stage_scopes) == total else []


def _interleave(a: list, b: list) -> list:
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i : i + 1] + b[i : i + 1]
    return out


class AnalystBackend(PlannerBackend):
    """Deterministic exploring proposer (see the module docstring).

    ``noise_k``: a move is kept when it beats the incumbent by more than ``noise_k``
    standard errors; ``eval_images``: scored images assumed when a record gives neither
    ``score_se`` nor ``eval_images``; ``criteria``: the importance criteria probed (those
    registered; the base strategy's own is added last); ``max_corrections``: ratio
    corrections of one shape without the budget solver before it counts as failed.
    """

    name = "analyst"

    def __init__(
        self,
        prior_exponent: float = 2.0,
        noise_k: float = NOISE_K,
        eval_images: int = DEFAULT_EVAL_IMAGES,
        criteria: tuple[str, ...] = CRITERIA,
        max_corrections: int = 4,
        max_ratio: float = 0.95,
    ):
        self.prior_exponent = float(prior_exponent)
        self.noise_k = float(noise_k)
        self.eval_images = int(eval_images)
        self.criteria = tuple(str(c) for c in criteria)
        self.max_corrections = int(max_corrections)
        self.max_ratio = float(max_ratio)

    def describe(self) -> dict:
        return {
            "backend": self.name, "prior_exponent": self.prior_exponent, "noise_k": self.noise_k,
            "eval_images": self.eval_images, "criteria": list(self.criteria),
        }

    # --- exploration ---------------------------------------------------------------------------
    def _options(self, base: Strategy) -> list[tuple[str, str]]:
        registered = set(list_importances())
        crit = [c for c in self.criteria if c in registered]
        if base.importance not in crit:
            crit.append(base.importance)
        return _interleave([("importance", c) for c in crit], [("grouping", g) for g in (*GROUPING_ORDER, "isomorphic")])

    @staticmethod
    def _scope_order(ctx: ProposalContext, shares: dict, kinds: dict) -> list[str]:
        """Kind scopes (residual stream, inner widths...) first, then positions, by MAC share
        (under a latency budget: slowest MACs first, :func:`_slow_scopes`); ``heads`` scopes
        are left alone (a multiplier there switches on head pruning)."""
        names = [n for n in ctx.scope_names() if kinds.get(n, "stage") != "heads"]
        slow = _latency_slowness(ctx)
        return sorted(names, key=lambda n: (kinds.get(n, "stage") == "stage", -slow.get(n, 0.0),
                                            -shares.get(n, 0.0), n))

    def _steps(self, ctx: ProposalContext, records: list[dict]) -> list[Step]:
        steps = replay(records, self.noise_k, self.eval_images, solve_budget=ctx.solve_budget)
        if ctx.solve_budget:
            return steps
        # without the solver, a shape that stayed out of band max_corrections times failed
        out, run, prev = [], 0, None
        for s, r in zip(steps, records, strict=True):
            key = shape_key(record_shape(r))
            run = (run + 1 if key == prev else 1) if s.outcome == "pending" and not r.get("in_band") else 0
            prev = key
            if run >= self.max_corrections:
                s = Step(s.revision, s.parent, "failed", text=f"out of band after {run} ratio corrections")
            out.append(s)
        return out

    def _explore(self, ctx: ProposalContext, records: list[dict], steps: list[Step], shares, kinds):
        """``(shape, reason)`` of the next move, or ``(None, reason)`` when none is left."""
        shapes = {s.revision: record_shape(r) for s, r in zip(steps, records, strict=True)}
        inc = next((s for s in reversed(steps) if s.outcome in ("reference", "kept")), None)
        inc_shape = shapes[inc.revision] if inc else ctx.base_strategy.to_dict()
        trials = []
        for s in steps:
            if s.parent is not None and s.outcome in ("kept", "noise", "worse", "failed"):
                c = classify(shapes[s.revision], shapes[s.parent])
                if c is not None:
                    trials.append(Trial(*c, s))
        inc_rev = inc.revision if inc else None
        moves = []
        slow = {n for n, v in _latency_slowness(ctx).items() if v >= SLOW}
        for i, scope in enumerate(self._scope_order(ctx, shares, kinds)):
            mine = [t for t in trials if t.kind == "scope" and t.target == scope]
            moves += scope_moves(scope, mine, inc_rev, i, slow=scope in slow)
        moves += structural_moves(self._options(ctx.base_strategy), inc_shape, trials)
        # with the solver, a shape that only rescales every kind (or stage) scope is the same model
        families = scope_families(ctx.scopes, kinds) if ctx.solve_budget else ([], [])

        def key(shape: dict) -> str:
            return solved_shape_key(shape, *families)

        tried = {key(sh) for sh in shapes.values() if sh is not None}
        tried |= {key(r["proposed"]) for r in records if isinstance(r.get("proposed"), dict)}
        for m in sorted(moves, key=lambda m: (m.tier, -m.gain, m.order, m.kind, m.target)):
            new = m.apply(inc_shape)
            if new is not None and key(new) not in tried:
                return new, f"move: {m.describe(inc_shape)}; {m.why}"
        return None, EXHAUSTED

    def _story(self, steps: list[Step], records: list[dict]) -> str:
        """What the last verdict was and which revision is the incumbent."""
        shapes = {s.revision: record_shape(r) for s, r in zip(steps, records, strict=True)}
        parts = []
        last = next((s for s in reversed(steps) if s.outcome in ("kept", "noise", "worse")), None)
        if last is not None:
            c = classify(shapes[last.revision], shapes[last.parent])
            what = f" ({Trial(*c, last).describe()})" if c else ""
            ref = last.score - last.delta
            parts.append(f"revision {last.revision}{what} scored {last.score:.4g} vs incumbent {ref:.4g} "
                         f"(revision {last.parent}): {last.text}")
        inc = next((s for s in reversed(steps) if s.outcome in ("reference", "kept")), None)
        if inc is not None:
            parts.append(f"incumbent: revision {inc.revision} ({inc.score:.4g})")
        return "; ".join(parts)

    def _shape_for(self, ctx: ProposalContext, shares, kinds) -> tuple[dict | None, str, list[Step], list[dict]]:
        records = [r for r in ctx.history if record_shape(r) is not None]
        if not records:
            return ctx.base_strategy.to_dict(), "revision 1: the base strategy as given, the reference every move is compared with", [], records
        steps = self._steps(ctx, records)
        if steps[-1].outcome == "pending" and not records[-1].get("in_band"):
            return record_shape(records[-1]), "keep the last shape, correct the ratio (out of band)", steps, records
        shape, why = self._explore(ctx, records, steps, shares, kinds)
        return shape, why, steps, records

    # --- ratio ---------------------------------------------------------------------------------
    def _fit(self, points, mm: ShareMacModel, cap, base) -> tuple[float, float, str]:
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

    def _solve_ratio(self, ctx, shape: dict, mm: ShareMacModel, cap) -> tuple[float, str]:
        base, aim = float(ctx.base_macs), ctx.aim_macs
        low, high = ctx.band
        multipliers = shape.get("multipliers") or {}
        measured = [(r["strategy"], float(r["achieved_macs"])) for r in ctx.history
                    if r.get("achieved_macs") and isinstance(r.get("strategy"), dict)]
        # MACs at a ratio depend on the ranking too: fit on attempts of the same importance
        # and grouping when there are any
        family = [(s, y) for s, y in measured if _family(s) == _family(shape)] or measured
        points = [(float(s["pruning_ratio"]), s.get("multipliers", {}), y) for s, y in family]
        p, c, how = self._fit(points, mm, cap, base)
        hi_r = self.max_ratio

        def f(r):
            return c * base * mm.kept(r, multipliers, p, cap) - aim

        r = _bisect(f, 0.0, hi_r)
        if r is None:
            r = 0.0 if f(0.0) < 0 else hi_r
        notes = [f"MACs(r) = c*base*sum share*(1-r*m)^p with {how}"]
        # safeguard: stay inside the bracket of attempts of this shape
        key = shape_key(shape)
        same = [(float(s["pruning_ratio"]), y) for s, y in measured if shape_key(s) == key]
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
        if round(r, 4) in {round(pr, 4) for pr, _ in same}:  # a repeat teaches nothing: nudge toward the aim
            r = min(hi_r, max(0.0, r + (0.005 if f(r) > 0 else -0.005)))
            notes.append("nudged off a ratio already tried")
        return round(r, 4), "; ".join(notes)

    # --- entry point -------------------------------------------------------------------------------
    def propose(self, ctx: ProposalContext) -> tuple[Strategy, str]:
        shares, kinds = scope_shares(ctx.scopes), scope_kinds(ctx.scopes)
        shape, why, steps, records = self._shape_for(ctx, shares, kinds)
        story = self._story(steps, records) if steps else ""
        if shape is None:  # nothing new: repeat the incumbent, so that the Master stops
            inc = next((s for s in reversed(steps) if s.outcome in ("reference", "kept")), None)
            rec = next((r for r in records if inc and r.get("revision") == inc.revision), records[-1])
            again = Strategy.from_dict(rec.get("proposed") or rec["strategy"])
            return again, f"{story}. {EXHAUSTED} around the incumbent: proposing it again, the search can stop."
        cap = float(shape.get("max_layer_ratio", ctx.base_strategy.max_layer_ratio))
        ratio, why_r = self._solve_ratio(ctx, shape, ShareMacModel(shares, kinds), cap)
        strategy = Strategy.from_dict({**shape, "pruning_ratio": ratio})
        low, high = ctx.band
        rationale = (
            f"Aim at {format_macs(ctx.aim_macs)} MACs (band {format_macs(low)}-{format_macs(high)}, "
            f"baseline {format_macs(ctx.base_macs)}). " + (f"{story}. " if story else "") + f"{why}. "
            f"Ratio {ratio:.4f}: {why_r}."
        )
        if ctx.solve_budget:
            rationale += " The budget solver will refine the ratio."
        return strategy, rationale
