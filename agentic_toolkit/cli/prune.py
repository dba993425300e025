"""``agentic-toolkit prune MODEL --target-macs 1.77G [--constraint params=15M] [--strategy FILE|PRESET] [--counter C] [--out DIR] [--json]``.

``--strategy`` is a strategy JSON file or the name of a registered preset
(``isomorphic_taylor``, ``uniform_l1``, ...; ``agentic_toolkit.list_strategies()``). Fits the
strategy's pruning ratio to the MAC budget, prunes, optionally saves the result
(``save_pruned``). ``--json`` prints one JSON object with ``model``, ``target_macs``,
``achieved_macs``, ``predicted_macs``, ``base_macs``, ``params``, ``base_params``,
``error_pct``, ``within_tolerance``, ``pruning_ratio``, ``probes``, ``strategy``,
``counter``, ``counts``, ``out`` and ``seconds``. ``--counter torch_pruning`` meets the band
in ``torch_pruning.utils.count_ops_and_params``'s count (the AgenticPruner paper's); every
MAC number of the report is then in that convention, and ``counts`` lists the verifying
counts of the pruned model ``[ratio, predicted, counted]``.

``--constraint KIND=VALUE`` (repeatable; ``macs`` or ``params``, a count such as ``15M`` or a
fraction of the unpruned model such as ``60%``) budgets several counts at once, with or
without ``--target-macs`` (which also takes ``50%``): the most restrictive one binds. The
JSON report then also has ``binding``, ``predicted_params`` and ``constraints`` (per kind:
``target``, ``achieved``, ``error_pct``, ``reachable``, ``binding``, ``met``); ``target_macs``
is null when MACs are not budgeted and ``error_pct`` is that of the binding constraint.

``--constraint latency=60%`` (or ``latency=12ms``) budgets the latency on ``--device``
(``cpu``, with ``--threads`` threads, or ``cuda``) at batch 1, predicted from a per-layer
table measured on first use and cached (the JSON report then has ``predicted_latency_ms``;
latency ``target``/``achieved`` are in microseconds). ``--round-to N|auto`` overrides the
strategy's ``round_to`` (``auto``: per-layer multiples chosen from measured latency steps).
``--pick-rounding`` then times that fit and the same budget solved with uniform multiples
8/16/32 on the whole network (``pick_rounding``, on ``--device`` with ``--threads``) and keeps
the most efficient; the JSON report's ``rounding`` lists the candidates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

from ..errors import ToolkitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="model name (create_model: timm names, cifar_resnet20..56)")
    parser.add_argument("--target-macs", default=None,
                        help="MAC budget, e.g. 1.77G, 450M, 4.1e9 or 50%% of the model's MACs")
    parser.add_argument(
        "--constraint", action="append", default=[], metavar="KIND=VALUE",
        help="a budget, repeatable: params=15M, params=60%%, macs=1.77G, latency=12ms, latency=60%% "
        "(all are met; the tightest binds)",
    )
    parser.add_argument("--device", default="cpu", help="device a latency budget is measured on: cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the latency measurement")
    parser.add_argument("--round-to", default=None, metavar="N|auto",
                        help="override the strategy's round_to: an integer or auto (from measured latency steps)")
    parser.add_argument("--pick-rounding", action="store_true",
                        help="time the fit and uniform multiples 8/16/32 on the whole network; keep the most efficient")
    parser.add_argument(
        "--strategy", default=None, metavar="FILE|PRESET",
        help="strategy JSON file or preset name, e.g. isomorphic_taylor (default: Strategy())",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="save the pruned model to this directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--input-size", default=None, help="C,H,W or a square side (default: the model's; 3,32,32 for CIFAR models)"
    )
    parser.add_argument("--pretrained", default=None, metavar="PATH", help="local checkpoint (CIFAR models: 'true')")
    parser.add_argument("--num-classes", type=int, default=None,
                        help="classifier size (default: the architecture's; saved with --out)")
    parser.add_argument("--tolerance", default="1,5", help="accepted band: UP,DOWN in percent (default 1,5)")
    parser.add_argument(
        "--counter", default="macs", choices=("macs", "torch_pruning"),
        help="MAC convention of the target: macs (conv/linear/matmul, default) or torch_pruning "
        "(count_ops_and_params, as the AgenticPruner paper reports)",
    )
    parser.add_argument(
        "--calibration-batches",
        type=int,
        default=2,
        help="CIFAR-10 batches of 64 for gradient-based importance (taylor) on CIFAR models (default 2)",
    )


def _ints(text: str, what: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ToolkitError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise ToolkitError(f"{what} must be positive integers, got {text!r}")
    return values


def _input_shape(model, text: str | None) -> tuple[int, int, int, int]:
    if text:
        dims = _ints(text, "--input-size")
        if len(dims) == 1:
            dims = (3, dims[0], dims[0])
        if len(dims) != 3:
            raise ToolkitError(f"--input-size must be C,H,W or one side, got {text!r}")
        return (1, *dims)
    spec = getattr(model, "toolkit_spec", None) or {}
    if str(spec.get("name", "")).startswith("cifar_"):
        return (1, 3, 32, 32)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = cfg.get("input_size")
    return (1, *size) if size and len(size) == 3 else (1, 3, 224, 224)


def _tolerance(text: str) -> tuple[float, float]:
    try:
        up, down = (float(v) for v in text.split(","))
    except ValueError:
        raise ToolkitError(f"--tolerance must be UP,DOWN in percent (e.g. 1,5), got {text!r}") from None
    return up, down


def _strategy(spec: str | None):
    """``Strategy()``, a registered preset by name, or a strategy JSON file."""
    from ..pruning.strategy import Strategy, list_strategies, strategy_preset

    if not spec:
        return Strategy()
    if spec in list_strategies() and not Path(spec).is_file():
        return strategy_preset(spec)
    try:
        text = Path(spec).read_text()
    except OSError as exc:
        raise ToolkitError(
            f"cannot read the strategy file {spec}: {exc.strerror or exc} (--strategy also takes a "
            f"preset name: {', '.join(list_strategies())})"
        ) from None
    return Strategy.from_json(text)


def _round_to(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise ToolkitError(f"--round-to must be an integer or auto, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from ..models import create_model
    from ..pruning.budget import fit_to_budget
    from ..pruning.constraints import check_constraints, parse_constraint_args
    from ..pruning.criteria import get_importance
    from ..pruning.persist import save_pruned

    start = time.perf_counter()
    constraints = parse_constraint_args(args.constraint)
    if args.target_macs is None and not constraints:
        raise ToolkitError("give a budget: --target-macs 1.77G and/or --constraint params=15M")
    check_constraints(args.target_macs, constraints)  # bad values fail before the model is built
    tolerance = _tolerance(args.tolerance)
    strategy = _strategy(args.strategy)
    if args.round_to is not None:
        strategy = strategy.replace(round_to=_round_to(args.round_to))
    pretrained = {"true": True, None: False}.get(args.pretrained, args.pretrained)
    model = create_model(args.model, pretrained=pretrained, num_classes=args.num_classes)
    x = torch.randn(_input_shape(model, args.input_size), generator=torch.Generator().manual_seed(0))
    calibration = None
    needs_gradients = get_importance(strategy.importance).needs_gradients
    if needs_gradients and args.model.startswith("cifar_") and args.calibration_batches > 0:
        from ..data import calibration_batches

        calibration = calibration_batches("cifar10", n_batches=args.calibration_batches, batch_size=64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fit_to_budget(model, strategy, args.target_macs, x, tolerance=tolerance, calibration=calibration,
                            counter=args.counter, constraints=constraints or None, device=args.device,
                            threads=args.threads)
        rounding = None
        if args.pick_rounding:
            from ..pruning.latency_fit import pick_rounding

            choice = pick_rounding(model, fit, device=args.device, threads=args.threads)
            fit, rounding = choice.fit, choice.to_dict()
        result = fit.prune()
    notes = sorted({str(w.message) for w in caught})
    out = str(save_pruned(args.out, result)) if args.out else None
    report = _report(args, fit, result, out, notes, start) | {"rounding": rounding}
    if args.json:
        print(json.dumps(report))
    else:
        _print_report(args.model, fit, result, report, tolerance)
        if rounding:
            print("round_to efficiency measured: " + ", ".join(
                f"{c['round_to']} {c['efficiency']:.3f}" for c in rounding["candidates"]) + f"; kept {rounding['round_to']}")
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        if out:
            print(f"saved to {out}")
    return 0


def _report(args: argparse.Namespace, fit, result, out: str | None, notes: list[str], start: float) -> dict:
    target = fit.target_macs
    plain = [c.kind for c in fit.constraints] == ["macs"]
    return {
        "model": args.model,
        "target_macs": None if target is None else int(target),
        "achieved_macs": int(result.macs),
        "predicted_macs": int(fit.predicted_macs),
        "base_macs": int(result.base_macs),
        "params": int(result.params),
        "base_params": int(result.base_params),
        "predicted_params": fit.predicted_params,
        "predicted_latency_ms": fit.predicted_latency_ms,
        "error_pct": 100.0 * (result.macs - target) / target if plain else fit.error_pct,
        "within_tolerance": bool(fit.within_tolerance),
        "binding": fit.binding,
        "constraints": {c.kind: c.to_dict() for c in fit.constraints},
        "pruning_ratio": fit.ratio,
        "probes": fit.probes,
        "strategy": fit.strategy.to_dict(),
        "counter": fit.counter,
        "counts": [[float(r), int(p), int(c)] for r, p, c in fit.counts],
        "input_shape": list(result.input_shape),
        "out": out,
        "notes": notes,
        "seconds": round(time.perf_counter() - start, 3),
    }


def _print_report(name: str, fit, result, report: dict, tolerance: tuple[float, float]) -> None:
    from ..units import format_macs

    band = f"{'within' if fit.within_tolerance else 'OUTSIDE'} tolerance +{tolerance[0]}%/-{tolerance[1]}%"
    if report["constraints"].keys() == {"macs"}:
        print(f"{name}: {format_macs(result.base_macs)} -> {format_macs(result.macs)} MACs "
              f"[{fit.counter}] (target {format_macs(fit.target_macs)}, {report['error_pct']:+.3f}%, {band})")
    else:
        print(f"{name}: {format_macs(result.base_macs)} -> {format_macs(result.macs)} MACs [{fit.counter}], "
              f"{fit.binding} binding ({band})")
        for c in fit.constraints:
            print(f"  {c.describe()}")
    print(
        f"params {format_macs(result.base_params)} -> {format_macs(result.params)}; "
        f"pruning_ratio {fit.ratio:.5f} found in {fit.probes} probes; {report['seconds']:.1f} s"
    )
