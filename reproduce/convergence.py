"""The convergence study: how many revisions each proposer needs to land in the MAC band.

What is compared, per case (model x target x backend x setting), MACs only (no evaluator:
a search stops at its first revision in band), at most ``max_revisions`` revisions, band
+1% / -5%:

* **models**: the CIFAR-10 ResNet-20 and ResNet-56 with their trained weights
  (``create_model(name, pretrained=True)``, 1x3x32x32), and the paper's four ImageNet models
  (timm ResNet-50, ResNet-101, ConvNeXt-Small, DeiT-Base, 1x3x224x224) at **random init**
  (seed 0; no ImageNet weights are available offline). Weights matter only through the
  importance ranking (which channels, hence which layers, lose width first), so the MAC
  curve of a random-init model is not that of the trained one;
* **targets**: 30, 40, 50, 60 and 70% of the baseline MACs, plus the paper's absolute targets
  for the ImageNet models;
* **backends**: ``grid`` -- a coarse-to-fine grid over the whole feasible ratio range
  ``[0, max_layer_ratio]`` (:class:`~agentic_toolkit.agents.backends.grid.GridBackend`:
  revision k tries a point of resolution 0.9/2**k, so any target that a point of resolution
  0.9/2**R lands in band is reached within R revisions); ``analyst`` -- the offline analyst;
  ``local_llm`` -- the ``openai`` backend driven by SmolLM2-135M-Instruct on a local
  llama-cpp-python server (:class:`~reproduce.local_llm.LocalLLMServer`,
  ``--n_ctx 8192``), on a subset only (:data:`LLM_MODELS` x :data:`LLM_FRACTIONS`, paper
  setting): a search with it takes minutes on this machine;
* **settings**: ``solve_budget=False`` (the proposer's ratio is used as is: the paper's
  setting; it measures how well a proposer guesses a ratio from the history) and
  ``solve_budget=True`` (:func:`~agentic_toolkit.fit_to_budget` solves the ratio: every
  proposer lands in one revision, which measures the solver, not the proposer).

For the LLM column each row also says how much of the search was the LLM's own: revisions
proposed by it (``own_proposals``), analyst fallbacks after an unusable reply
(``fallbacks``), repaired replies, repeats replaced by the analyst, the analyst's takeover
after divergence, and who proposed the first revision in band (``in_band_by``).

:func:`convergence_study` caches every finished case as one JSON line (``cache``), so an
interrupted run resumes where it stopped; :func:`summarise_convergence` gives the success
rate and revisions per backend x setting; the plots are drawn from the written tables
(:mod:`.convergence_plots`), so notebook 04 can redraw a
figure without re-running the study. The models, targets and cases are in
:mod:`.convergence_cases` (re-exported here).
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from agentic_toolkit.agents.master import run_agentic_pruning
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.pruning.apply import get_plan
from agentic_toolkit.tables import machine_info
from agentic_toolkit.units import format_macs, parse_macs

from .common import output_dir
from .convergence_cases import (  # noqa: F401 - CIFAR_*, IMAGENET_MODELS, SMOKE_MODELS, study_model re-exported
    CIFAR_INPUT,
    CIFAR_MODELS,
    FRACTIONS,
    IMAGENET_MODELS,
    LLM_BACKEND,
    LLM_FRACTIONS,
    LLM_MODELS,
    LLM_NAME,
    LLM_SOLVE_BUDGET,
    SMOKE_MODELS,
    STUDY_MODELS,
    StudyModel,
    study_cases,
    study_model,
    study_targets,
)

#: Bump when a backend or the search changes what a cached case would give.
STUDY_VERSION = 2
#: The key of a case in the cache (with ``study_version``, ``tolerance`` and ``max_revisions``).
CASE_KEY = ("model", "weights", "target", "backend", "solve_budget")
#: The columns of the study table, in order (then the machine columns).
COLUMNS = (
    "model", "weights", "input", "target", "target_macs", "target_fraction", "base_macs",
    "backend", "llm", "solve_budget", "converged", "revisions", "first_in_band", "in_band_by",
    "in_band_by_self",
    "achieved_macs", "error_pct", "stop_reason", "own_proposals", "fallbacks", "repaired", "repeats",
    "takeover", "proposers", "ratios", "errors_pct", "llm_seconds", "seconds", "tolerance", "max_revisions",
    "study_version",
)


def case_key(case: dict, tolerance: Sequence[float], max_revisions: int) -> str:
    """The cache key of a case: its :data:`CASE_KEY` fields and the settings that decide its outcome."""
    key = {k: case[k] for k in CASE_KEY}
    key.update(tolerance=list(map(float, tolerance)), max_revisions=int(max_revisions), study_version=STUDY_VERSION)
    return json.dumps(key, sort_keys=True)


def read_cache(path: str | Path | None) -> dict[str, dict]:
    """``{case key: row}`` of a study cache (JSON lines; a torn last line is ignored)."""
    rows: dict[str, dict] = {}
    if path is None or not Path(path).is_file():
        return rows
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a kill
        if isinstance(entry, dict) and "key" in entry and "row" in entry:
            rows[entry["key"]] = entry["row"]
    return rows


def default_cache(smoke: bool = False) -> Path:
    """Where the study caches finished cases: ``runs/convergence_cases.jsonl`` (git-ignored;
    smoke: ``data/smoke/convergence_cases.jsonl``)."""
    return output_dir(True) / "convergence_cases.jsonl" if smoke else PROJECT_ROOT / "runs" / "convergence_cases.jsonl"


def llm_available() -> str | None:
    """None when the local LLM column can run, else why not (llama-cpp-python or the model missing)."""
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama-cpp-python is not installed (pip install -e \".[local-llm]\")"
    try:
        from .local_llm import find_gguf

        find_gguf()
    except Exception as exc:  # noqa: BLE001 - any failure to find the model skips the column
        return str(exc)
    return None


def _row(case: dict, res, base: int, target_macs: int, seconds: float, tolerance, max_revisions) -> dict:
    revs = res.records
    engine = res.backend
    first = next((r for r in revs if r.get("in_band")), None)
    m: StudyModel = case["study_model"]
    row = {
        "model": case["model"], "weights": case["weights"], "input": "x".join(map(str, m.input_size)),
        "target": case["target"], "target_macs": target_macs, "target_fraction": round(target_macs / base, 4),
        "base_macs": base, "backend": case["backend"], "llm": LLM_NAME if case["backend"] == LLM_BACKEND else "",
        "solve_budget": case["solve_budget"], "converged": bool(res.converged), "revisions": res.revisions,
        "first_in_band": res.first_in_band, "in_band_by": None if first is None else first.get("proposer"),
        "in_band_by_self": first is not None and first.get("proposer") == engine,
        "achieved_macs": res.macs, "error_pct": None if res.error_pct is None else round(res.error_pct, 4),
        "stop_reason": res.stop_reason,
        "own_proposals": sum(r.get("proposer") == engine for r in revs),
        "fallbacks": sum(bool(r.get("fallback")) for r in revs),
        "repaired": sum(bool(r.get("repaired")) for r in revs),
        "repeats": sum(r.get("llm_proposed") is not None for r in revs),
        "takeover": sum(bool(r.get("takeover")) for r in revs),
        "proposers": json.dumps([r.get("proposer") for r in revs]),
        "ratios": json.dumps([(r.get("strategy") or {}).get("pruning_ratio") for r in revs]),
        "errors_pct": json.dumps([None if r.get("error_pct") is None else round(r["error_pct"], 4) for r in revs]),
        "llm_seconds": round(sum(float(r.get("llm_seconds") or 0) for r in revs), 1),
        "seconds": round(seconds, 2),
        "tolerance": json.dumps(list(map(float, tolerance))), "max_revisions": int(max_revisions),
        "study_version": STUDY_VERSION,
    }
    return {**row, **machine_info()}


def _llm_backend(url: str, alias: str):
    from agentic_toolkit.agents.backends import make_backend

    return make_backend("openai", base_url=url, model=alias, timeout=300.0, retries=1, max_tokens=512, seed=0)


# Longer than 80 lines: one driver that validates its settings, reads the cache, starts the
# local LLM server once for its column and runs every case; each case's work is in helpers above.
def convergence_study(
    models: Iterable[str | StudyModel] | None = None,
    backends: Sequence[str] = ("grid", "analyst"),
    *,
    fractions: Sequence[float] = FRACTIONS,
    solve_budget_modes: Sequence[bool] = (False, True),
    tolerance: tuple[float, float] = (1.0, 5.0),
    max_revisions: int = 5,
    llm: bool | str = False,
    llm_models: Sequence[str] = LLM_MODELS,
    llm_fractions: Sequence[float] = LLM_FRACTIONS,
    llm_solve_budget_modes: Sequence[bool] = LLM_SOLVE_BUDGET,
    llm_log_dir: str | Path | None = None,
    cache: str | Path | None | bool = True,
    smoke: bool = False,
    progress: bool = True,
) -> pd.DataFrame:
    """Run every case of :func:`study_cases` (MACs only, no evaluator); one row per case.

    ``models``: names or :class:`StudyModel` (default: :data:`STUDY_MODELS`; smoke:
    :data:`SMOKE_MODELS`, two targets each). ``llm``: False (no LLM column), True (start the
    local SmolLM2-135M server once for the whole column; the column is skipped, with a
    printed note, when llama-cpp-python or the model is missing) or the base URL of an
    OpenAI-compatible server already running. Each LLM search's history (prompts, raw
    replies) goes to ``llm_log_dir`` (default: ``runs/convergence_llm/``; smoke:
    ``data/smoke/convergence_llm/``). ``cache``: True (:func:`default_cache`), a path, or
    False/None (no cache); each finished case is appended as one JSON line and a later call
    skips the cases found there (same case, tolerance, max_revisions and
    :data:`STUDY_VERSION`). One pruning plan per model is shared by its searches. Returns the
    rows of the requested cases in :func:`study_cases` order, with the per-revision
    proposers, ratios and errors as JSON lists and the machine columns of the run that
    computed each row.
    """
    want_llm = bool(llm)
    if want_llm and not isinstance(llm, str):
        why = llm_available()
        if why:
            print(f"local LLM column skipped: {why}")
            want_llm = False
    cases = study_cases(models, backends, fractions=fractions, solve_budget_modes=solve_budget_modes,
                        llm=want_llm, llm_models=llm_models, llm_fractions=llm_fractions,
                        llm_solve_budget_modes=llm_solve_budget_modes, smoke=smoke)
    cache_path = default_cache(smoke) if cache is True else (Path(cache) if cache else None)
    done = read_cache(cache_path)
    keys = [case_key(c, tolerance, max_revisions) for c in cases]
    todo = [(c, k) for c, k in zip(cases, keys, strict=True) if k not in done]
    log_dir = Path(llm_log_dir) if llm_log_dir else (output_dir(smoke) / "convergence_llm" if smoke
                                                     else PROJECT_ROOT / "runs" / "convergence_llm")
    server = None
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tqdm(total=len(cases), initial=len(cases) - len(todo), desc="convergence", unit="search",
                  disable=not progress) as bar:
            current: tuple[str, Any] | None = None
            for case, key in todo:
                m: StudyModel = case["study_model"]
                if current is None or current[0] != m.name:
                    current = None  # free the last model first
                    model, x = m.build(), m.example_input()
                    current = (m.name, (model, x, get_plan(model, x)))
                model, x, plan = current[1]
                base = int(plan.base_macs)
                spec = case["spec"]
                target_macs = int(round(spec * base)) if isinstance(spec, float) else parse_macs(spec)
                options: dict[str, Any] = {}
                if case["backend"] == LLM_BACKEND:
                    if isinstance(llm, str):
                        url, alias = llm, "SmolLM2-135M-Instruct"
                    else:
                        if server is None:
                            from .local_llm import LocalLLMServer

                            server = LocalLLMServer(n_ctx=8192).start()
                        url, alias = server.url, server.alias
                    log_dir.mkdir(parents=True, exist_ok=True)
                    log = log_dir / f"{m.name}_{case['target'].rstrip('%')}_sb{int(case['solve_budget'])}.jsonl"
                    log.unlink(missing_ok=True)  # a case is redone whole, never resumed mid-search
                    options = dict(backend=_llm_backend(url, alias), log_path=log)
                else:
                    options = dict(backend=case["backend"])
                t0 = time.perf_counter()
                res = run_agentic_pruning(
                    model, target_macs, x, tolerance=tolerance, max_revisions=max_revisions,
                    solve_budget=case["solve_budget"], progress=False, model_name=m.name, plan=plan, **options,
                )
                row = _row(case, res, base, target_macs, time.perf_counter() - t0, tolerance, max_revisions)
                done[key] = row
                if cache_path is not None:
                    with open(cache_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"key": key, "row": row}, default=str) + "\n")
                bar.update(1)
                bar.set_postfix_str(f"{m.name} {case['target']} {case['backend']} -> {format_macs(res.macs or 0)}",
                                    refresh=False)
    finally:
        if server is not None:
            server.stop()
    rows = [done[k] for k in keys]
    return pd.DataFrame(rows, columns=[*COLUMNS, *[c for c in (rows[0] if rows else {}) if c not in COLUMNS]])


def summarise_convergence(df: pd.DataFrame) -> pd.DataFrame:
    """Success rate and revisions per backend x setting: over all of each backend's cases
    (``subset="all"``), and over the LLM column's cases only (``subset="LLM cases"``, every
    backend that ran them) so the LLM is compared on the same cases."""
    rows = []

    def add(g: pd.DataFrame, backend: str, sb: bool, subset: str) -> None:
        ok = g[g["converged"]]
        own = ok[ok["in_band_by_self"].astype(str).str.lower() == "true"] if "in_band_by_self" in ok else ok
        revs = int(g["revisions"].sum())
        rows.append({
            "backend": backend,
            "solve_budget": sb,
            "subset": subset,
            "cases": len(g),
            "converged": len(ok),
            "success_rate_%": round(100 * len(ok) / len(g), 1),
            "in_band_by_own_proposal": len(own),
            "mean_revisions_converged": round(ok["first_in_band"].mean(), 2) if len(ok) else None,
            "max_revisions_converged": int(ok["first_in_band"].max()) if len(ok) else None,
            "mean_revisions_all": round(g["revisions"].mean(), 2),
            "revisions": revs,
            "own_proposals_%": round(100 * g["own_proposals"].sum() / revs, 1) if "own_proposals" in g and revs else None,
            "fallbacks": int(g["fallbacks"].sum()),
            "mean_seconds": round(g["seconds"].mean(), 1) if "seconds" in g else None,
        })

    for (backend, sb), g in df.groupby(["backend", "solve_budget"], sort=False):
        add(g, backend, sb, "all")
    llm = df[df["backend"] == LLM_BACKEND]
    if len(llm):
        cases = set(map(tuple, llm[["model", "target", "solve_budget"]].itertuples(index=False)))
        same = df[[tuple(t) in cases for t in df[["model", "target", "solve_budget"]].itertuples(index=False)]]
        for (backend, sb), g in same.groupby(["backend", "solve_budget"], sort=False):
            add(g, backend, sb, "LLM cases")
    return pd.DataFrame(rows)


def error_trajectories(df: pd.DataFrame) -> pd.DataFrame:
    """Long table (one row per search revision) of the MAC error, for trajectory plots."""
    rows = []
    for _, r in df.iterrows():
        for i, err in enumerate(json.loads(r["errors_pct"]), start=1):
            rows.append({"model": r["model"], "target": r["target"], "backend": r["backend"],
                         "solve_budget": r["solve_budget"], "revision": i, "error_pct": err})
    return pd.DataFrame(rows)


def read_study(path) -> pd.DataFrame:
    """A table written by :func:`convergence_study` or :func:`summarise_convergence`
    (``solve_budget``, ``converged``, ``in_band_by_self`` as bools)."""
    df = pd.read_csv(path)
    for col in ("solve_budget", "converged", "in_band_by_self"):
        if col in df and df[col].dtype != bool:
            text = df[col].astype(str).str.lower()
            if text.isin(["true", "false"]).all():  # (the summary's ``converged`` is a count)
                df[col] = text.eq("true")
    return df


__all__ = [
    "FRACTIONS",
    "LLM_BACKEND",
    "STUDY_MODELS",
    "StudyModel",
    "convergence_study",
    "default_cache",
    "error_trajectories",
    "llm_available",
    "read_cache",
    "read_study",
    "study_cases",
    "study_targets",
    "summarise_convergence",
]
