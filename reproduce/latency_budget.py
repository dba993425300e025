"""Latency budgets on this machine: MAC target against latency target, predicted against
measured speedup, and the efficiency of ``round_to="auto"``.

Shared by ``benchmarks/bench_latency_budget.py`` (ResNet-50, ConvNeXt-S, DeiT-S at 224 px)
and notebook 06. Per model and batch size a latency table is measured once
(:func:`~agentic_toolkit.pruning.latency_model.build_latency_model`, cached on disk), then

- ``latency_target`` rows: ``fit_to_budget(constraints={"latency": "50%"})`` with the default
  strategy, timed against the unpruned model interleaved and corrected at most ``refine``
  times (:func:`~agentic_toolkit.pruning.latency_fit.refine_latency_fit`); ``open_speedup``
  is the uncorrected fit's measured speedup, ``speedup`` the returned fit's, ``within_7pct``
  whether it is within ±7% of the target speedup;
- ``round_to`` rows: ``mac_pct`` % of the MACs (or the absolute ``mac_target``) with
  ``round_to`` None, ``"auto"``, ``"auto+measured"``: the ``"auto"`` fit and the same strategy
  with each uniform multiple 8/16/32 timed whole, the most efficient kept
  (:func:`~agentic_toolkit.pruning.latency_fit.pick_rounding`; ``round_to_chosen`` says which,
  and the row's timing is a fresh one, not the pick's), and ``"auto+shape"``: ``"auto"`` with
  the per-group ratios tilted toward the groups whose MACs are slow on the device
  (:func:`~agentic_toolkit.pruning.latency_shape.latency_shaped_fit`, the predicted-fastest
  shape at the same MACs); ``efficiency`` = measured speedup / MAC ratio.

:func:`latency_budget_table` turns those rows (or the committed CSV) into one row per fit
for notebook 06; :func:`efficiency_table` sets the two ``round_to`` settings side by side.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from agentic_toolkit.benchmarking import benchmark
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.models import create_model
from agentic_toolkit.pruning import Strategy, fit_to_budget, get_plan
from agentic_toolkit.pruning.latency_fit import pick_rounding, refine_latency_fit
from agentic_toolkit.pruning.latency_model import build_latency_model
from agentic_toolkit.pruning.latency_shape import latency_shaped_fit
from agentic_toolkit.tables import MACHINE_COLUMNS, annotate

from .common import StudyResult

#: The benchmark's models (timm, random weights, 224 px).
MODELS = ("resnet50", "convnext_small", "deit_small_patch16_224")
#: Acceptance: the measured speedup within this fraction of the target speedup.
ACCEPT = 0.07
#: round_to rows: label -> (Strategy.round_to, latency-shaped, rounding picked by measurement)
ROUND_TO = {"none": (None, False, False), "auto": ("auto", False, False), "auto+measured": ("auto", False, True),
            "auto+shape": ("auto", True, False)}


def _model(name: str) -> tuple[torch.nn.Module, int]:
    torch.manual_seed(0)
    return create_model(name).eval(), (32 if name.startswith("cifar_") else 224)


def _row(name: str, batch: int, experiment: str, fit, lat, measured: dict, **extra) -> dict[str, Any]:
    pred = fit.predicted_latency_ms
    return {"model": name, "batch_size": batch, "experiment": experiment, **extra,
            "round_to": _round_to(fit.strategy.round_to), "pruning_ratio": fit.ratio,
            "mac_fraction": fit.predicted_macs / fit.base_macs, "base_predicted_ms": lat.base_ms,
            "predicted_ms": pred, "predicted_speedup": lat.base_ms / pred, **measured,
            "table_measurements": lat.measurements, "table_seconds": lat.seconds}


def run_model(
    name: str,
    batch: int,
    *,
    targets: Sequence[float] = (50.0, 70.0),
    mac_pct: float = 50.0,
    round_to_rows: bool = True,
    threads: int | None = None,
    warmup: int = 3,
    repeats: int = 20,
    table_warmup: int = 2,
    table_repeats: int = 7,
    refine: int = 2,
    progress: bool = True,
    verbose: bool = True,
    mac_target: str | None = None,
    variants: Sequence[str] = tuple(ROUND_TO),
    onnx: bool = False,
    channels_last: bool = False,
) -> list[dict[str, Any]]:
    """The rows of one model at one batch size (see the module docstring): one per latency
    target in ``targets`` (% of the unpruned latency) and, with ``round_to_rows``, two at
    ``mac_pct`` % of the MACs. ``threads``: CPU threads of the table and the timings
    (default torch's setting); ``warmup``/``repeats``: interleaved timing of each fit;
    ``table_warmup``/``table_repeats``: the latency table's timings (a cached table is reused);
    ``mac_target`` (e.g. ``"8.17G"`` per image, times ``batch``) replaces ``mac_pct``; ``variants``: keys of :data:`ROUND_TO`;
    ``onnx``: the ``round_to`` rows also time onnxruntime (``onnx_*`` columns); ``channels_last``:
    the table (and its step curves) is measured in NHWC and the ``round_to`` rows time both models
    and the input so (a ``memory_format`` column; latency targets keep the default layout's timing)."""
    threads = threads or torch.get_num_threads()
    model, side = _model(name)
    shape = (batch, 3, side, side)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plan = get_plan(model, x)
        lat = build_latency_model(plan, "cpu", threads, warmup=table_warmup, repeats=table_repeats,
                                  auto_round=round_to_rows, progress=progress, channels_last=channels_last)
    rows = []
    for pct in targets:
        fit = fit_to_budget(model, Strategy(), example_inputs=x, plan=plan, latency_model=lat, threads=threads,
                            constraints={"latency": f"{pct:g}%"})
        ref = refine_latency_fit(model, fit, rounds=refine, warmup=warmup, repeats=repeats, threads=threads)
        c, open_, target = ref.best, ref.checks[0], 100.0 / pct
        measured = {"latency_ms": c.latency_ms, "baseline_latency_ms": c.baseline_latency_ms, "speedup": c.speedup,
                    "speedup_min": c.speedup_min, "speedup_max": c.speedup_max}
        row = _row(name, batch, "latency_target", ref.fit, lat, measured, target_pct=pct, target_speedup=target,
                   speedup_ratio=c.speedup / target, open_speedup=open_.speedup,
                   open_ratio=open_.speedup / target, rounds=len(ref.checks) - 1)
        row["within_7pct"] = abs(row["speedup_ratio"] - 1) <= ACCEPT
        rows.append(row)
        if verbose:
            print(f"{name} b{batch} latency {pct:g}%: target {target:.2f}x, predicted {row['predicted_speedup']:.2f}x "
                  f"({row['predicted_ms']:.2f} ms); measured uncorrected {open_.speedup:.2f}x (ratio "
                  f"{row['open_ratio']:.3f}), after {row['rounds']} correction(s) {c.speedup:.2f}x "
                  f"({c.latency_ms:.2f} ms vs {c.baseline_latency_ms:.2f}), ratio {row['speedup_ratio']:.3f} "
                  f"{'OK' if row['within_7pct'] else 'MISS'} (MACs {100 * row['mac_fraction']:.0f}%)", flush=True)
    for label in (variants if round_to_rows else ()):
        rt, shaped, picked = ROUND_TO[label]
        target = _mac_target(mac_target, batch) or f"{mac_pct:g}%"
        if shaped:
            fit = latency_shaped_fit(model, Strategy(round_to=rt), target, x, lat, plan=plan, threads=threads).fit
        else:
            fit = fit_to_budget(model, Strategy(round_to=rt), example_inputs=x, plan=plan, latency_model=lat,
                                threads=threads, target_macs=target)
        if picked:
            fit = pick_rounding(model, fit, warmup=warmup, repeats=repeats, threads=threads).fit
        res = benchmark(fit.prune().model, shape, baseline=model, batch_sizes=(batch,), threads=threads,
                        warmup=warmup, repeats=repeats, measure_memory=False, onnx=onnx, channels_last=channels_last)
        r = res.rows[0]
        measured = {"latency_ms": r["latency_ms"], "baseline_latency_ms": r["baseline_latency_ms"],
                    "speedup": r["speedup_median"], "speedup_min": r["speedup_min"], "speedup_max": r["speedup_max"],
                    "mac_ratio": res.mac_ratio, "efficiency": r["efficiency"], "repeats": res.repeats}
        if channels_last:
            measured["memory_format"] = "channels_last"
        if onnx:
            measured |= {k: r.get(k) for k in ("onnx_latency_ms", "onnx_baseline_latency_ms", "onnx_speedup",
                                               "onnx_speedup_min", "onnx_speedup_max", "onnx_efficiency")}
        rows.append({**_row(name, batch, "round_to", fit, lat, measured,
                            target_pct=round(100.0 * fit.target_macs / fit.base_macs, 2)), "round_to": label,
                     "round_to_chosen": _round_to(fit.strategy.round_to)})
        if verbose:
            print(f"{name} b{batch} {target} MACs round_to={label}: speedup {measured['speedup']:.2f}x, "
                  f"MAC ratio {measured['mac_ratio']:.2f}x, efficiency {measured['efficiency']:.2f}", flush=True)
    return rows


class LatencyBudgetResult(StudyResult):
    """The rows of :func:`latency_budget_study` (``frame``, the benchmark CSV's columns with
    the machine columns) and its ``report`` (settings, hits, seconds)."""

    def summary(self) -> str:
        """Hits within ±7% (before and after the measured correction) and the efficiency of
        ``round_to`` None against ``"auto"`` per model and batch size."""
        return summarise(self.frame)


def latency_budget_study(
    models: Sequence[str] = MODELS,
    batch_sizes: Sequence[int] = (1, 16),
    *,
    threads: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    **settings: Any,
) -> LatencyBudgetResult:
    """:func:`run_model` for every batch size and model (batch sizes outer), on the CPU with
    ``threads`` threads (default torch's setting), with ``settings`` (``run_model``'s keywords:
    ``targets``, ``mac_pct``, ``refine``, ...); the rows carry the machine columns."""
    import inspect

    known = set(inspect.signature(run_model).parameters) - {"name", "batch", "threads", "progress", "verbose"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ToolkitError(f"unknown setting(s) {', '.join(unknown)}; run_model takes {', '.join(sorted(known))}")
    threads = threads or torch.get_num_threads()
    defaults = {k: p.default for k, p in inspect.signature(run_model).parameters.items() if k in known}
    kw = {**defaults, **settings, "threads": threads}
    kw["targets"], kw["variants"] = tuple(float(t) for t in kw["targets"]), tuple(kw["variants"])
    start = time.perf_counter()
    rows = [r for b in batch_sizes for n in models
            for r in run_model(n, b, progress=progress, verbose=verbose, **kw)]
    frame = annotate(pd.DataFrame(rows), threads=threads)
    lat = frame[frame["experiment"] == "latency_target"] if len(frame) else frame
    report = {"models": list(models), "batch_sizes": [int(b) for b in batch_sizes], **kw,
              "within_7pct": int(lat["within_7pct"].sum()) if len(lat) else 0, "latency_targets": len(lat),
              "seconds": round(time.perf_counter() - start, 1)}
    return LatencyBudgetResult(frame, report)


def _mac_target(spec: str | None, batch: int) -> str | int | None:
    """An absolute MAC target is per image (as the paper's 8.17G): times ``batch`` for the
    batch of the example inputs; a percentage stays as it is."""
    if spec is None or str(spec).strip().endswith("%"):
        return spec
    from agentic_toolkit.units import parse_macs

    return parse_macs(spec) * int(batch)


def _round_to(value: Any) -> str:
    return "none" if value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("", "None") \
        else str(value)


def latency_budget_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per fit of a benchmark table (``frame``: rows of :func:`latency_budget_study`
    or ``data/bench_latency_budget.csv``).

    Columns: ``model``, ``batch_size``, ``target`` (``"50% MACs"``, ``"50% latency"``),
    ``target_kind``, ``target_pct``, ``round_to`` (``"none"``/``"auto"``), ``stage`` (``solved``:
    as the solver returned it; ``corrected``: after the measured correction), ``mac_fraction``,
    ``base_predicted_ms``, ``predicted_ms``, ``predicted_speedup`` (latency model),
    ``aim_speedup`` (what the fit aims at: the prediction for a MAC target, the target for a
    latency target, which a solved fit's prediction meets within -5/+1%), ``latency_ms``,
    ``baseline_latency_ms``, ``speedup`` (measured, median), ``speedup_min``, ``speedup_max``,
    ``measured_vs_aim`` (speedup / aim_speedup), ``within_7pct`` and ``efficiency`` (speedup x
    mac_fraction), then the machine columns ``frame`` has. A solved latency fit that was then
    corrected has only its measured speedup and its target (the benchmark keeps the returned
    fit's MACs and prediction).
    """
    out = []
    machine = [c for c in MACHINE_COLUMNS if c in frame.columns]
    for r in frame.to_dict("records"):
        base = {"model": r["model"], "batch_size": int(r["batch_size"]), "target_pct": float(r["target_pct"]),
                "round_to": _round_to(r.get("round_to")), **{c: r[c] for c in machine}}
        final = {"mac_fraction": r["mac_fraction"], "base_predicted_ms": r["base_predicted_ms"],
                 "predicted_ms": r["predicted_ms"], "predicted_speedup": r["predicted_speedup"],
                 "latency_ms": r["latency_ms"], "baseline_latency_ms": r["baseline_latency_ms"],
                 "speedup": r["speedup"], "speedup_min": r["speedup_min"], "speedup_max": r["speedup_max"]}
        if r["experiment"] == "round_to":
            out.append({**base, "target": f"{r['target_pct']:g}% MACs", "target_kind": "macs", "stage": "solved",
                        **final, "aim_speedup": r["predicted_speedup"]})
            continue
        label = {"target": f"{r['target_pct']:g}% latency", "target_kind": "latency"}
        rounds = int(r["rounds"]) if pd.notna(r.get("rounds")) else 0
        if rounds > 0:
            out.append({**base, **label, "stage": "solved", "base_predicted_ms": r["base_predicted_ms"],
                        "aim_speedup": r["target_speedup"], "speedup": r["open_speedup"]})
        out.append({**base, **label, "stage": "corrected" if rounds else "solved", **final,
                    "aim_speedup": r["target_speedup"]})
    cols = ["model", "batch_size", "target", "target_kind", "target_pct", "round_to", "stage", "mac_fraction",
            "base_predicted_ms", "predicted_ms", "predicted_speedup", "aim_speedup", "latency_ms",
            "baseline_latency_ms", "speedup", "speedup_min", "speedup_max"]
    table = pd.DataFrame(out).reindex(columns=cols)
    table["measured_vs_aim"] = table["speedup"] / table["aim_speedup"]
    table["within_7pct"] = (table["measured_vs_aim"] - 1).abs() <= ACCEPT
    table["efficiency"] = table["speedup"] * table["mac_fraction"]
    return pd.concat([table, pd.DataFrame(out, columns=machine)], axis=1)


def same_fraction(table: pd.DataFrame, pct: float = 50.0) -> pd.DataFrame:
    """The fits of :func:`latency_budget_table` at ``pct`` % (of the MACs or of the latency) as
    they were returned (the corrected latency fit where there is one), MAC target first, then
    ``round_to`` in :data:`ROUND_TO` order."""
    t = table[(table["target_pct"].round(1) == pct) & table["speedup_min"].notna()]
    rank = {k: i for i, k in enumerate(ROUND_TO)}
    t = t.assign(_kind=(t["target_kind"] != "macs").astype(int), _rt=t["round_to"].map(rank).fillna(len(rank)))
    return t.sort_values(["model", "batch_size", "_kind", "_rt"], ignore_index=True).drop(columns=["_kind", "_rt"])


def efficiency_table(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and batch size, the MAC-target fits of every :data:`ROUND_TO` variant side by
    side: ``mac_fraction_*``, ``speedup_*``, ``efficiency_*``, ``gain`` (auto / none - 1),
    ``gain_measured`` (auto+measured / none - 1) and ``gain_shape`` (auto+shape / none - 1; NaN
    where one is missing)."""
    order = [f"{v}_{rt}" for v in ("mac_fraction", "speedup", "efficiency") for rt in ROUND_TO]
    cols = ["model", "batch_size", "target", *order, "gain", "gain_measured", "gain_shape"]
    t = table[table["target_kind"] == "macs"]
    if t.empty:
        return pd.DataFrame(columns=cols)
    wide = t.pivot_table(index=["model", "batch_size", "target"], columns="round_to",
                         values=["mac_fraction", "speedup", "efficiency"], aggfunc="first")
    wide.columns = [f"{v}_{rt}" for v, rt in wide.columns]
    wide = wide.reset_index().reindex(columns=cols)
    wide["gain"] = wide["efficiency_auto"] / wide["efficiency_none"] - 1
    wide["gain_measured"] = wide["efficiency_auto+measured"] / wide["efficiency_none"] - 1
    wide["gain_shape"] = wide["efficiency_auto+shape"] / wide["efficiency_none"] - 1
    return wide


def summarise(frame: pd.DataFrame) -> str:
    """Text summary of a benchmark table (see :meth:`LatencyBudgetResult.summary`)."""
    table = latency_budget_table(frame)
    lat = table[table["target_kind"] == "latency"]
    last = lat.drop_duplicates(["model", "batch_size", "target"], keep="last")
    first = lat.drop_duplicates(["model", "batch_size", "target"], keep="first")
    lines = [f"latency targets: {int(last['within_7pct'].sum())}/{len(last)} within ±{ACCEPT:.0%} of the target "
             f"speedup ({int(first['within_7pct'].sum())}/{len(first)} before the measured correction)"]
    eff = efficiency_table(table)
    for r in eff.dropna(subset=["gain"]).to_dict("records"):
        more = "".join(f", {r[f'efficiency_{v}']:.2f} ({v})" for v in ("auto+measured", "auto+shape")
                       if pd.notna(r[f"efficiency_{v}"]))
        lines.append(f"{r['model']} b{r['batch_size']} {r['target']}: efficiency {r['efficiency_none']:.2f} "
                     f"(round_to none) -> {r['efficiency_auto']:.2f} (auto), {100 * r['gain']:+.0f}%{more}")
    return "\n".join(lines)
