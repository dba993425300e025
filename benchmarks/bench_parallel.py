"""Ray on this machine: a sensitivity table fanned out to workers, and Ray's overhead on a study.

(a) The adapted CIFAR ResNet-56's sensitivity table (``measure_sensitivity``: every prunable
    group alone cut by 25/50/75 %, scored by the default proxy: BatchNorm re-estimated on 512
    held-out val images, top-1 on 512 others) measured twice in one run: in this process with
    2 torch threads, then on 2 Ray workers of 1 thread each (``executor=RayExecutor(workers=2)``:
    the plan and the proxy's images travel once per worker). ``speedup`` = the first's seconds
    over the second's; ``same_table`` says whether the two tables are equal (they must be).
(b) Ray's overhead on a tiny study: the tasks of ``benchmarks/search_pareto.py --smoke`` (3
    searches of the ResNet-20 at 50 % of its MACs and their fine-tuning cells; ``--smoke`` here:
    ``--tasks`` trivial ones) run one after the other in this process, then as Ray tasks that
    each ask for the whole local Ray (2 CPUs: one at a time, 2 threads, like the sequential
    run), so the difference is Ray's: scheduling, worker start-up, state and records moving.
    ``overhead_pct`` = (Ray seconds - sequential seconds) / sequential seconds. The Ray arm runs
    twice: on fresh workers (the first tasks of this Ray: each worker imports torch and the
    toolkit once, a fixed cost a longer study dilutes), then again on the workers already up
    (as on a running cluster, or for the next study of a session).

Ray is started once (``ray.init(num_cpus=2)``, its seconds in ``ray_start_seconds``) and not
counted in either arm. Writes ``data/bench_parallel.csv`` (one row per arm, with the command
and the machine). Targets: a speedup of at least 1.5x for (a); an overhead of at most 10 % on (b).

    python benchmarks/bench_parallel.py                # -> data/bench_parallel.csv (minutes)
    python benchmarks/bench_parallel.py --smoke        # ResNet-20, a tiny proxy, 2 tasks -> data/smoke/
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch

import agentic_toolkit as at
from agentic_toolkit.agents.sensitivity import measure_sensitivity
from agentic_toolkit.parallel import RayExecutor, ResultStore, Task, run_tasks
from agentic_toolkit.paths import PROJECT_ROOT
from agentic_toolkit.tables import annotate, machine_line, write_table
from reproduce.common import output_dir

CPUS = 2


def _model(name: str) -> torch.nn.Module:
    return at.create_model(f"cifar_{name}", pretrained=PROJECT_ROOT / "data" / f"cifar_{name}_adapted.safetensors")


def _example() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def sensitivity_rows(model_name: str, images: int, fractions: tuple[float, ...]) -> list[dict]:
    """(a): the same table in this process (2 threads) and on 2 Ray workers (1 thread each)."""
    model, x = _model(model_name), _example()
    proxy = at.default_evaluator(eval_images=images, bn_images=images)
    plan = at.get_plan(model, x)  # built once, not timed: both arms measure the probes
    plan.importance("magnitude_l2")
    kw = dict(fractions=fractions, plan=plan, progress=False)
    torch.set_num_threads(CPUS)
    t0 = time.perf_counter()
    here = measure_sensitivity(model, x, proxy, **kw)
    seq = time.perf_counter() - t0
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    fanned = measure_sensitivity(model, x, proxy, executor=RayExecutor(workers=CPUS, threads=1), **kw)
    par = time.perf_counter() - t0
    same = here.frame.equals(fanned.frame) and here.unpruned_score == fanned.unpruned_score
    common = {"measurement": "sensitivity_table", "model": f"cifar_{model_name}", "probes": len(here.frame) + 1,
              "proxy_images": 2 * images}
    return [{**common, "arm": f"1 process x {CPUS} threads", "processes": 1, "threads": CPUS, "seconds": seq},
            {**common, "arm": f"{CPUS} Ray workers x 1 thread", "processes": CPUS, "threads": 1, "seconds": par,
             "speedup": seq / par, "same_table": same}]


def _score_share(images: int, share: float, store) -> dict:
    """One task of the tiny study: the ResNet-20 pruned to ``share`` of its MACs, scored."""
    model, x = _model("resnet20"), _example()
    proxy = at.default_evaluator(eval_images=images, bn_images=images)
    target = int(share * at.profile_macs(model, example_inputs=x).total_macs)
    fit = at.fit_to_budget(model, at.strategy_preset("uniform_l1"), target, x)
    return {"share": share, "macs": fit.predicted_macs, "score": float(proxy(fit.prune().model))}


def _search_pareto_tasks() -> list[Task]:
    """The search study's smoke configuration (``benchmarks/search_pareto.py --smoke``: 3
    searchers on the ResNet-20 at 50 % of its MACs and their fine-tuning cells), its functions
    sent to the workers by value (the script is not an importable module there)."""
    import importlib.util

    from ray import cloudpickle

    spec = importlib.util.spec_from_file_location("search_pareto_study", Path(__file__).with_name("search_pareto.py"))
    sp = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sp  # a dataclass in the script looks its module up there
    spec.loader.exec_module(sp)
    cloudpickle.register_pickle_by_value(sp)
    return sp.tasks(sp.Config.smoke())


def study_rows(smoke: bool, tasks: int, images: int, root: Path) -> list[dict]:
    """(b): the tiny study in this process, then as Ray tasks one at a time (each asks for all
    the CPUs; 2 threads in both arms)."""
    if smoke:
        shares = [round(0.3 + 0.5 * i / max(1, tasks - 1), 3) for i in range(tasks)]
        study = [Task(f"share/{s}", partial(_score_share, images, s)) for s in shares]
        name = f"{tasks} x (prune the ResNet-20 to a share of its MACs, score it)"
    else:
        study = _search_pareto_tasks()
        name = "python benchmarks/search_pareto.py --smoke (its tasks)"
    study = [dataclasses.replace(t, num_cpus=CPUS) for t in study]
    torch.set_num_threads(CPUS)
    stores, seconds = {}, {}
    # the Ray arm twice: first on fresh workers (each imports torch and the toolkit), then again
    # on the same Ray, whose workers are up (as on a running cluster or for a later study)
    for arm, executor in (("sequential", None), ("ray_cold", "ray"), ("ray_warm", "ray")):
        store = stores[arm] = ResultStore(root / arm, {"images": images})
        t0 = time.perf_counter()
        run_tasks(study, store, executor=executor, log=lambda line: None)
        seconds[arm] = time.perf_counter() - t0
    torch.set_num_threads(1)

    def records(store):  # what the tasks computed, without their timings
        return {k: {c: v for c, v in r.items() if "seconds" not in c} for k, r in store.records.items()}

    common = {"measurement": "tiny_study", "model": "cifar_resnet20", "study": name, "tasks": len(study)}
    seq = seconds["sequential"]
    rows = [{**common, "arm": f"sequential, 1 process x {CPUS} threads", "processes": 1, "threads": CPUS,
             "seconds": seq}]
    for arm, words in (("ray_cold", "fresh workers"), ("ray_warm", "workers already up")):
        rows.append({**common, "arm": f"Ray tasks of {CPUS} CPUs, one at a time, {words}", "processes": 1,
                     "threads": CPUS, "seconds": seconds[arm], "overhead_seconds": seconds[arm] - seq,
                     "overhead_pct": 100 * (seconds[arm] - seq) / seq,
                     "same_records": records(stores["sequential"]) == records(stores[arm])})
    return rows

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="seconds: ResNet-20, 64-image proxy, 2 tasks -> data/smoke/")
    ap.add_argument("--tasks", type=int, default=2, help="--smoke: tasks of its tiny study")
    ap.add_argument("--out", type=Path, default=None, help="default: data/bench_parallel.csv (--smoke: data/smoke/)")
    ap.add_argument("--store", type=Path, default=None, help="the tiny study's stores (default: a temporary folder)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    import tempfile

    import ray

    started = not ray.is_initialized()
    t0 = time.perf_counter()
    if started:
        ray.init(num_cpus=CPUS, include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t0 if started else float("nan")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if args.smoke:
                rows = sensitivity_rows("resnet20", 32, (0.5,)) + study_rows(True, args.tasks, 32,
                                                                             args.store or Path(tmp))
            else:
                rows = sensitivity_rows("resnet56", 512, (0.25, 0.5, 0.75)) + study_rows(
                    False, args.tasks, 512, args.store or Path(tmp))
    finally:
        if started:
            ray.shutdown()
    command = " ".join(["python", "benchmarks/bench_parallel.py", *(sys.argv[1:] if argv is None else argv)])
    df = annotate(pd.DataFrame(rows).assign(ray_start_seconds=ray_start, command=command), threads=CPUS)
    out = write_table(df, args.out or output_dir(args.smoke) / "bench_parallel.csv")
    cols = [c for c in ("measurement", "arm", "seconds", "speedup", "overhead_seconds", "overhead_pct", "same_table",
                        "same_records")
            if c in df]
    print(df[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"Ray started in {ray_start:.1f} s (not counted)\n{machine_line(CPUS)}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
