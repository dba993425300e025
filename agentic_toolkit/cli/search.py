"""``agentic-toolkit search MODEL --target-macs 4.16G --backend analyst [--constraint latency=60%] [--counter C] [--log run.jsonl] [--json]``.

``--target-macs 50%`` is a share of the model's MACs in the ``--counter`` convention (the
history header records the resolved count). ``--backend optuna`` (TPE) and ``--backend
random`` are black-box baselines over the analyst's strategy space.

``--constraint KIND=VALUE`` (repeatable: ``params=15M``, ``latency=60%``, ``latency=12ms``)
adds budgets besides the MAC target; every candidate is solved to meet all of them, latency
on ``--device`` with ``--threads`` at the example input's batch size (a table measured once
and cached), and the agent sees where the latency is.

``--counter torch_pruning`` meets the band in ``torch_pruning.utils.count_ops_and_params``'s
count (the AgenticPruner paper's) instead of the default conv/linear/matmul MACs; the
history header and the result say which.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import ToolkitError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="model name: cifar_resnet20/32/44/56 or any timm model")
    parser.add_argument("--target-macs", required=True,
                        help="MAC budget, e.g. 4.16G or 450M, or a share of the model's MACs (in --counter), e.g. 50%%")
    parser.add_argument("--constraint", action="append", default=[], metavar="KIND=VALUE",
                        help="another budget, repeatable: params=15M, params=60%%, latency=12ms, latency=60%%")
    parser.add_argument("--device", default="cpu", help="device a latency budget is measured on: cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads of the latency measurement")
    parser.add_argument("--backend", default="analyst",
                        help="analyst (default, offline), grid, optuna (TPE), random, anthropic or openai")
    parser.add_argument("--llm-model", default=None, help="model name for anthropic/openai (default: the backend's)")
    parser.add_argument("--base-url", default=None, help="endpoint for anthropic/openai (default: the env variable)")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per LLM request")
    parser.add_argument("--tolerance", nargs=2, type=float, default=(1.0, 5.0), metavar=("OVER", "UNDER"),
                        help="accepted percent above and below the target (default 1 5)")
    parser.add_argument("--counter", default="macs", choices=("macs", "torch_pruning"),
                        help="MAC convention of the target: macs (default) or torch_pruning (count_ops_and_params)")
    parser.add_argument("--preset", default="default", choices=("fast", "default", "thorough"),
                        help="search preset (with --proxy-batches): sensitivity table and revision budget; "
                             "see agentic_toolkit.list_search_presets()")
    parser.add_argument("--max-revisions", type=int, default=None,
                        help="default: 5 without --proxy-batches, else the preset's")
    parser.add_argument("--no-solve-budget", action="store_true",
                        help="use the proposer's ratio as is (the paper's setting) instead of solving it")
    parser.add_argument("--importance", default=None, help="importance criterion of the base strategy")
    parser.add_argument("--input-size", type=int, default=None, help="square input side (default: the model's)")
    parser.add_argument("--pretrained", default=None,
                        help="'true' (CIFAR ResNets: offline weights) or a local checkpoint path")
    parser.add_argument("--proxy-batches", type=int, default=0,
                        help="score in-band candidates with the default evaluator on N batches of 128 held-out CIFAR-10 val images "
                             "(BatchNorm re-estimated on up to 1,024 others; 4 = at.default_evaluator()); CIFAR models")
    parser.add_argument("--log", default=None, help="history JSONL path (flushed every revision)")
    parser.add_argument("--resume", action="store_true", help="continue the search recorded in --log")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --log instead of resuming")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def _example_inputs(model, name: str, size: int | None):
    import torch

    if size is None:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        shape = tuple(cfg.get("input_size") or ((3, 32, 32) if name.startswith("cifar_") else (3, 224, 224)))
    else:
        if size < 8:
            raise ToolkitError(f"--input-size must be >= 8, got {size}")
        shape = (3, size, size)
    return torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))


def _backend(args):
    if args.backend not in ("anthropic", "openai"):
        if args.llm_model or args.base_url or args.timeout:
            raise ToolkitError("--llm-model/--base-url/--timeout apply only to --backend anthropic or openai")
        return args.backend
    from ..agents.backends import make_backend

    options = {}
    if args.llm_model:
        options["model"] = args.llm_model
    if args.base_url:
        options["base_url"] = args.base_url
    if args.timeout:
        options["timeout"] = args.timeout
    return make_backend(args.backend, **options)


def run(args: argparse.Namespace) -> int:
    from ..agents.master import run_agentic_pruning
    from ..agents.targets import check_target
    from ..models import create_model
    from ..pruning.constraints import check_constraints, fmt, parse_constraint_args
    from ..pruning.criteria import get_importance
    from ..pruning.strategy import Strategy

    target = check_target(args.target_macs)  # bad input fails before anything is built; "50%" stays a share
    constraints = parse_constraint_args(args.constraint)
    if "macs" in constraints:
        raise ToolkitError("give the MAC budget as --target-macs, not --constraint macs=...")
    check_constraints(target, constraints)
    backend = _backend(args)
    if args.resume and args.force:
        raise ToolkitError("--resume and --force exclude each other")
    if args.resume and not args.log:
        raise ToolkitError("--resume needs --log PATH")
    if args.log and args.force and Path(args.log).exists():
        Path(args.log).unlink()
    pretrained = {"true": True, "false": False, None: False}.get(
        (args.pretrained or "").lower() or None, args.pretrained
    )
    import torch

    torch.manual_seed(0)  # a random-init model is then the same in every run (and --resume works)
    model = create_model(args.model, pretrained=pretrained)
    inputs = _example_inputs(model, args.model, args.input_size)
    evaluator = None
    if args.proxy_batches:
        if not args.model.startswith("cifar_"):
            raise ToolkitError("--proxy-batches needs CIFAR-10 data: use it with a cifar_resnet model")
        from ..training.proxy import default_evaluator

        # selection data is the held-out val split (shuffled, seeded), never test
        n = 128 * args.proxy_batches
        evaluator = default_evaluator(eval_images=n, bn_images=min(n, 1024))  # 4 batches: the default
    calibration = None
    if args.importance and get_importance(args.importance).needs_gradients and args.model.startswith("cifar_"):
        from ..data import calibration_batches

        # gradient-based importance from real training images, never from noise inputs
        calibration = calibration_batches("cifar10", n_batches=2, batch_size=64, split="train")
    base = Strategy(importance=args.importance) if args.importance else None
    result = run_agentic_pruning(
        model,
        target,
        inputs,
        tolerance=tuple(args.tolerance),
        max_revisions=args.max_revisions,
        backend=backend,
        evaluator=evaluator,
        calibration=calibration,
        solve_budget=not args.no_solve_budget,
        log_path=args.log,
        resume=args.resume,
        base_strategy=base,
        model_name=args.model,
        progress=not args.json and sys.stderr.isatty(),
        counter=args.counter,
        preset=args.preset,
        constraints=constraints or None,
        device=args.device,
        threads=args.threads,
    )
    if args.json:
        print(json.dumps({"model": args.model, **result.to_dict()}, indent=2))
    else:
        print(f"{args.model}: {result.summary()}")
        if args.counter != "macs":
            print(f"MACs counted in the {args.counter} convention (count_ops_and_params, per sample)")
        if result.strategy is not None:
            print(f"strategy: {result.strategy.to_json()}")
        best = next((r for r in result.records if r.get("revision") == result.best_revision), {})
        budgets = (best.get("budget") or {}).get("constraints") if constraints else None
        for kind, c in (budgets or {}).items():
            print(f"{kind}: {fmt(kind, c['achieved'])} (target {fmt(kind, c['target'])}, {c['error_pct']:+.2f}%"
                  f"{', binding' if c['binding'] else ''}{'' if c['met'] else ', NOT met'})")
        if args.log:
            print(f"history: {args.log}")
    return 0 if result.converged else 1
