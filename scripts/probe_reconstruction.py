"""Probe (val only): does least-squares reconstruction of the pruned layers help after fine-tuning?

Tried for issue #13 and not adopted. FastNAS's landed strategy at a budget (from
``data/05_accuracy_at_budget.csv``) is pruned; a copy is reconstructed layer by layer, in
forward order (each conv/linear whose inputs lost channels gets the ridge least-squares weights
that map the pruned model's inputs to the unpruned model's outputs on the kept channels, on
1,024 un-augmented training images). Both are scored on the 5,000 ``val`` images before and
after the study's fine-tune (KD, 20,000 training images per seed). Writes
``data/long/05_reconstruction_probe.csv``, one line per finished row (re-runs skip them).

    python scripts/probe_reconstruction.py --budget 0.5 --seeds 0,1
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from agentic_toolkit.data import cifar10
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.pruning.cutting import replay_history
from agentic_toolkit.pruning.groups import build_graph
from agentic_toolkit.pruning.strategy import Strategy
from agentic_toolkit.studies import at_budget as A
from agentic_toolkit.training.evaluation import evaluate


def kept_channels(source: nn.Module, pruned) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{layer: (kept input channels, kept output channels)}`` of every dense conv/linear of
    ``pruned`` (a :class:`PruneResult` of ``source``): a copy of ``source`` whose weights encode
    ``out * 4096 + in`` is cut by the result's pruning history (exact in float32 below 4,096
    channels)."""
    probe = copy.deepcopy(source)
    graph = build_graph(probe, torch.zeros(pruned.input_shape))  # traced before the weights change
    layers = {n: m for n, m in probe.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear)) and getattr(m, "groups", 1) == 1}
    with torch.no_grad():
        for m in layers.values():
            o, i = torch.meshgrid(torch.arange(m.weight.shape[0]), torch.arange(m.weight.shape[1]), indexing="ij")
            m.weight.copy_((o * 4096 + i).float().view(*o.shape, *[1] * (m.weight.dim() - 2)).expand_as(m.weight))
        replay_history(graph, pruned.history)
    codes = {n: m.weight.reshape(*m.weight.shape[:2], -1)[:, :, 0].long() for n, m in layers.items()}
    return {n: (c[0] % 4096, c[:, 0] // 4096) for n, c in codes.items()}


def _io(model: nn.Module, layer: nn.Module, x: torch.Tensor, want_input: bool) -> torch.Tensor:
    """Input (or output) of ``layer`` (a module of ``model``) on ``x``; the forward pass stops there."""
    class Stop(Exception):
        pass

    box = {}

    def hook(_m, inp, out):
        box["v"] = inp[0] if want_input else out
        raise Stop

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except Stop:
        pass
    finally:
        handle.remove()
    return box["v"]


def _rows(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    a = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)
    return a.transpose(1, 2).reshape(-1, a.shape[1])


@torch.no_grad()
def reconstruct(pruned: nn.Module, teacher: nn.Module, kept: dict, images: list, ridge: float = 1e-3) -> nn.Module:
    """Refit, in forward order, every layer whose inputs lost channels (ridge least squares)."""
    pruned.eval()
    mods, t_mods = dict(pruned.named_modules()), dict(teacher.named_modules())
    for name, (k_in, k_out) in kept.items():
        m, t = mods[name], t_mods[name]
        if len(k_in) == t.weight.shape[1]:
            continue
        gram = cross = 0
        for x in images:
            a = _rows(m, _io(pruned, m, x, True)).double()
            y = _io(teacher, t, x, False)
            b = (y[:, k_out] if y.dim() == 2 else y[:, k_out].flatten(2).transpose(1, 2).reshape(-1, len(k_out)))
            if isinstance(m, nn.Linear) and m.bias is not None:
                a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1)
            gram, cross = gram + a.T @ a, cross + a.T @ b.double()
        eye = torch.eye(len(gram), dtype=gram.dtype) * ridge * gram.diagonal().mean()
        w = torch.linalg.solve(gram + eye, cross).T.float()
        if isinstance(m, nn.Linear) and m.bias is not None:
            m.bias.copy_(w[:, -1])
            w = w[:, :-1]
        m.weight.copy_(w.reshape(m.weight.shape))
    return pruned


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--strategy", default="fastnas_sensitivity")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "data" / "long" / "05_reconstruction_probe.csv")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = A.Config()
    ctx = A.Context(cfg)
    cells = pd.read_csv(PROJECT_ROOT / "data" / "05_accuracy_at_budget.csv")
    row = cells[(cells.budget == args.budget) & (cells.strategy == args.strategy)].iloc[0]
    fit = A.fit_to_budget(ctx.teacher, Strategy.from_json(row.strategy_json), ctx.target(args.budget), ctx.x,
                          plan=ctx.plan)
    result = fit.prune()
    pruned = result.model
    images = [x for x, _ in cifar10("train", batch_size=128, limit=1024, augment=False, shuffle=False, seed=123)]
    variants = {"pruned": pruned, "reconstructed": reconstruct(copy.deepcopy(pruned), ctx.teacher,
                                                               kept_channels(ctx.teacher, result), images)}
    val = list(cifar10("val", batch_size=500))
    done = set()
    if args.out.exists():
        done = {(r.variant, r.seed) for r in pd.read_csv(args.out).itertuples()}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for variant, model in variants.items():
            if (variant, seed) in done:
                continue
            before = evaluate(model, val)["top1"]
            student, ft, n = A.kd_finetune(model, ctx.teacher, cfg.recipe, cfg.train_images, seed)
            rec = {"budget": args.budget, "strategy": args.strategy, "variant": variant, "seed": seed,
                   "val_top1_before": before, "val_top1_after": evaluate(student, val)["top1"],
                   "train_images": n, "recipe": json.dumps(cfg.recipe.to_dict())}
            print(rec, flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame([rec]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)


if __name__ == "__main__":
    main()
