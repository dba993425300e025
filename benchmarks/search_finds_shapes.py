"""Does the search find better strategy shapes than the default? ResNet-56 at 40% and 60% MACs.

The adapted CIFAR ResNet-56 (``data/cifar_resnet56_adapted.safetensors``) is searched at 40%
and 60% of its MACs with the default search: the offline analyst proposing shapes
(importance criterion, grouping, per-scope multipliers), the budget solver landing each on
the target, and the proxy evaluator (BatchNorm re-estimation, then top-1 on held-out images
of the ``val`` split) scoring it; the revision budget and patience are the search's
defaults (:func:`agentic_toolkit.agents.decisions.default_revision_budget` for the timed
cost of one candidate). A candidate identical to one already scored is not re-scored. Revision 1 is the default isomorphic L2 strategy, so its proxy score is the
reference. Per target it prints the default's score +- SE, the best found +- SE, whether
best - default > 2 SE, and the wall time.

Writes ``data/search_finds_shapes.csv`` (one row per target, with the machine, date and
versions) and ``data/search_finds_shapes_revisions.csv`` (one row per revision: shape,
score, SE, the analyst's verdict).

    python benchmarks/search_finds_shapes.py            # 2048 scored images, default budget
    python benchmarks/search_finds_shapes.py --smoke    # 256 images, 3 revisions -> data/smoke/
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import agentic_toolkit as at
from agentic_toolkit.agents.backends import AnalystBackend
from agentic_toolkit.agents.decisions import default_revision_budget
from agentic_toolkit.agents.incumbent import replay, score_se
from agentic_toolkit.agents.moves import grouping_of
from agentic_toolkit.models import create_model
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.pruning.apply import get_plan
from agentic_toolkit.tables import annotate, machine_line, write_table
from reproduce.common import output_dir

WEIGHTS = PROJECT_ROOT / "data" / "cifar_resnet56_adapted.safetensors"


def shape_of(strategy: dict) -> str:
    mult = json.dumps(strategy.get("multipliers") or {}, sort_keys=True)
    return f"{strategy['importance']}/{grouping_of(strategy)}/{mult}"


def search_one(model, x, plan, fraction, proxy, calib, revisions, patience):
    """One search; returns (summary row, revision rows). ``revisions``/``patience`` None: the
    search's defaults (the budget from one timed proxy call, patience a third of it)."""
    n = proxy.eval_images
    t0 = time.perf_counter()
    search = at.AgenticSearch(
        model, int(fraction * plan.base_macs), x, max_revisions=revisions, patience=patience, evaluator=proxy,
        backend=AnalystBackend(eval_images=n), logging=at.SearchLogging(progress=False),
        # sensitivity=False: what the analyst finds alone (the presets' tables: benchmarks/search_pareto.py)
        start=at.SearchStart(plan=plan, calibration=calib, sensitivity=False),
    )
    res = search.run()
    wall = time.perf_counter() - t0
    recs = res.records
    row = {
        "model": "cifar_resnet56_adapted", "mac_fraction": fraction, "target_macs": res.target_macs,
        "eval_images": n, "revisions": res.revisions, "max_revisions": search.max_revisions,
        "patience": search.patience, "budget_chosen": search.budget_choice.get("chosen", ""),
        "stop_reason": res.stop_reason,
        "default_score": res.default_score, "default_se": res.default_se,
        "best_score": res.score, "best_se": res.score_se,
        "best_revision": res.best_revision, "best_shape": shape_of(res.strategy.to_dict()) if res.strategy else "",
        "best_minus_default": res.gain, "best_beats_default": bool(res.gain_significant),
        "duplicates": sum(1 for r in recs if r.get("duplicate_of") is not None),
        "wall_s": round(wall, 1), "seconds_per_revision": round(wall / max(1, res.revisions), 1),
    }
    steps = {s.revision: s for s in replay(recs, default_images=n)}
    rows = [{
        "mac_fraction": fraction, "revision": r["revision"], "shape": shape_of(r["strategy"]),
        "pruning_ratio": r["strategy"]["pruning_ratio"], "achieved_macs": r.get("achieved_macs"),
        "in_band": r.get("in_band"), "score": r.get("score"),
        "se": score_se(r["score"], n) if r.get("score") is not None else None,
        "duplicate_of": r.get("duplicate_of"),
        "outcome": steps[r["revision"]].outcome if r["revision"] in steps else "",
        "verdict": steps[r["revision"]].text if r["revision"] in steps else "",
        "error": r.get("error", ""), "elapsed_s": r.get("elapsed_s"),
    } for r in recs]
    return row, rows


def report(row: dict) -> str:
    d, b = row["default_score"], row["best_score"]
    fmt = lambda s, se: "n/a" if s is None else f"{s:.2f} +- {se:.2f}"  # noqa: E731
    return (
        f"{row['mac_fraction']:.0%} MACs: default {fmt(d, row['default_se'])}, best {fmt(b, row['best_se'])} "
        f"(revision {row['best_revision']}: {row['best_shape']}); best - default > 2 SE: "
        f"{row['best_beats_default']}; {row['revisions']}/{row['max_revisions']} revisions, patience "
        f"{row['patience']}, {row['duplicates']} duplicate(s) ({row['stop_reason']}) in {row['wall_s']:.0f} s"
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="256 scored images, 3 revisions, data/smoke/")
    ap.add_argument("--fractions", nargs="*", type=float, default=[0.4, 0.6])
    ap.add_argument("--images", type=int, default=None, help="scored val images (default 2048; smoke 256)")
    ap.add_argument("--bn-images", type=int, default=1024, help="val images for BatchNorm re-estimation")
    ap.add_argument("--revisions", type=int, default=None, help="default: from the cost of one candidate")
    ap.add_argument("--patience", type=int, default=None, help="default: default_patience(revisions)")
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = 128
    images = args.images or (256 if args.smoke else 2048)
    torch.manual_seed(0)
    model = create_model("cifar_resnet56", pretrained=str(args.weights)).eval()
    x = torch.randn(1, 3, 32, 32)
    calib = at.calibration_batches("cifar10", n_batches=4, batch_size=64)
    plan = get_plan(model, x, calib)
    loader = at.cifar10("val", batch_size=batch, shuffle=True, seed=0)  # shuffled: val is sorted by class
    proxy = at.proxy_accuracy(loader, batches=max(1, images // batch), bn_batches=max(1, args.bn_images // batch))
    t0 = time.perf_counter()
    unpruned = proxy(model)
    cost = 1.5 * (time.perf_counter() - t0) + 1.0  # a pruned candidate: fit + prune + score
    revisions = args.revisions or (3 if args.smoke else None)  # None: the search times the proxy itself
    patience = args.patience
    print(f"unpruned proxy {unpruned:.2f} on {proxy.eval_images} images; ~{cost:.1f} s per candidate -> "
          f"about {revisions or default_revision_budget(cost)} revisions")
    rows, revs = [], []
    for fraction in args.fractions:
        row, rr = search_one(model, x, plan, fraction, proxy, calib, revisions, patience)
        row["unpruned_score"] = unpruned
        rows.append(row)
        revs += rr
        print(report(row), flush=True)
    out_dir = output_dir(args.smoke)
    out = write_table(annotate(pd.DataFrame(rows)), out_dir / "search_finds_shapes.csv")
    write_table(pd.DataFrame(revs), out_dir / "search_finds_shapes_revisions.csv")
    print(f"\n{machine_line()}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
