"""Study tasks and sensitivity probes on a local Ray with 2 CPUs, against the sequential path."""

from __future__ import annotations

import math
import os
import sys

import pandas as pd
import pytest
import torch

import agentic_toolkit as at
from agentic_toolkit.agents.sensitivity import measure_sensitivity
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.parallel import (
    RayExecutor,
    ResultStore,
    Task,
    estimate,
    run_tasks,
    worker_pool,
)
from agentic_toolkit.parallel.tasks import ordered

QUIET = {"log": lambda line: None}
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray for the module (with --dist loadgroup)


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray with 2 CPUs for this module (this file's functions travel by value)."""
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _square(key: str, value: int, deps: tuple[str, ...] = ()):
    def run(store):
        base = sum(store.get(d)["value"] for d in deps)  # a task reads only what it depends on
        return {"key": key, "value": value * value + base, "norm": math.hypot(value, 1.0), "items": (value, key)}

    return run


def _study() -> list[Task]:
    """A tiny study: two independent tasks, one depending on both, one on that."""
    return [Task("c", _square("c", 3, ("a", "b")), deps=("a", "b")), Task("a", _square("a", 1)),
            Task("b", _square("b", 2)), Task("d", _square("d", 4, ("c",)), deps=("c",), num_cpus=1)]


def _csv(store: ResultStore, path) -> str:
    frame = pd.DataFrame([{"key": k, **{c: v for c, v in r.items() if c != "task_seconds"}}
                          for k, r in sorted(store.records.items())])
    frame.to_csv(path, index=False)
    return path.read_text()


def test_sequential_order_resume_and_errors(tmp_path):
    store = ResultStore(tmp_path / "s", {"v": 1})
    assert [t.key for t in ordered(_study(), store)] == ["a", "b", "c", "d"]
    assert estimate([Task("x", print, estimate_s=90)], store, workers=3) == 30
    assert run_tasks(_study(), store, **QUIET) == 4
    assert store.get("c")["value"] == 9 + 1 + 4 and store.get("c")["items"] == [3, "c"]
    assert run_tasks(_study(), ResultStore(tmp_path / "s", {"v": 1}), **QUIET) == 0  # a re-run skips them
    assert ResultStore(tmp_path / "s", {"v": 2}).records == {}  # other settings: nothing reused
    with pytest.raises(KeyError, match="which no task produces"):
        run_tasks([Task("x", _square("x", 1), deps=("nope",))], store, **QUIET)
    with pytest.raises(ToolkitError, match="cycle"):
        run_tasks([Task("x", print, deps=("y",)), Task("y", print, deps=("x",))], store, **QUIET)
    with pytest.raises(ToolkitError, match="executor must be"):
        run_tasks([Task("z", print)], store, executor="dask", **QUIET)
    with worker_pool({"k": 2}) as pool:
        assert pool.map(lambda s, i: s["k"] * i, [1, 2]) == [2, 4]


def test_ray_study_gives_the_sequential_csv(tmp_path, ray_local):
    seq = ResultStore(tmp_path / "seq", {"v": 1})
    run_tasks(_study(), seq, **QUIET)
    par = ResultStore(tmp_path / "ray", {"v": 1})
    lines = []
    assert run_tasks(_study(), par, executor="ray", log=lines.append) == 4
    assert _csv(par, tmp_path / "ray.csv") == _csv(seq, tmp_path / "seq.csv")
    assert "4 tasks on Ray (2 CPU)" in lines[0] and len(lines) == 5
    # the driver wrote one file in the store's format, which a later run reads back
    again = ResultStore(tmp_path / "ray", {"v": 1})
    assert again.records == par.records and len(list((tmp_path / "ray").glob("*.jsonl"))) == 1
    assert run_tasks(_study(), again, executor="ray", **QUIET) == 0


def _dies_once(marker: str):
    def run(store):
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)  # the worker process dies mid-task, as on a lost node
        return {"value": 7, "pid": os.getpid()}

    return run


def _boom(store):
    raise RuntimeError("bad cell")


def test_killed_worker_is_retried_and_nothing_is_lost(tmp_path, ray_local):
    marker = str(tmp_path / "died")
    store = ResultStore(tmp_path / "s", {})
    tasks = [Task("dies", _dies_once(marker)), Task("after", _square("after", 2, ("dies",)), deps=("dies",)),
             Task("other", _square("other", 5))]
    assert run_tasks(tasks, store, executor=RayExecutor(max_retries=2), **QUIET) == 3
    assert os.path.exists(marker) and store.get("dies")["value"] == 7 and store.get("after")["value"] == 11
    assert set(ResultStore(tmp_path / "s", {}).records) == {"dies", "after", "other"}
    # a task that raises: the others are still recorded, then its error is raised
    store = ResultStore(tmp_path / "e", {})
    with pytest.raises(RuntimeError, match="bad cell"):
        run_tasks([Task("boom", _boom), Task("fine", _square("fine", 2))], store, executor="ray", **QUIET)
    assert set(ResultStore(tmp_path / "e", {}).records) == {"fine"}


def test_sensitivity_on_two_ray_workers_equals_the_sequential_table(r20_calibrated, ray_local):
    model, x, calib, plan = r20_calibrated
    loader = at.cifar10("val", batch_size=16, shuffle=True, seed=0)
    proxy = at.proxy_accuracy(loader, batches=1, bn_batches=1).subset(metric="neg_loss")
    kw = dict(fractions=(0.25, 0.5), adaptive=True, plan=plan, progress=False)  # two rounds
    seq = measure_sensitivity(model, x, proxy, **kw)
    calls = proxy.calls
    par = measure_sensitivity(model, x, proxy, executor=RayExecutor(workers=2), **kw)
    pd.testing.assert_frame_equal(par.frame, seq.frame, check_exact=True)
    assert par.unpruned_score == seq.unpruned_score and par.importance == seq.importance
    assert proxy.calls == 2 * calls  # the workers' calls are counted as if made here
    assert len(plan.group_scopes()) < len(seq.frame) < 2 * len(plan.group_scopes())  # both rounds ran


def test_rerank_on_ray_workers_equals_the_sequential_one(r20_calibrated, ray_local):
    from types import SimpleNamespace

    from agentic_toolkit.agents.rerank import rerank_candidates
    from agentic_toolkit.training.kd_proxy import KDProxy

    model, x, calib, plan = r20_calibrated
    records = []
    for i, ratio in enumerate((0.2, 0.3)):  # two logged candidates, as a finished search holds them
        st = at.Strategy(pruning_ratio=ratio)
        macs = at.apply_isomorphic_prune(model, st, x, plan=plan).macs
        records.append({"revision": i + 1, "in_band": True, "score": 50.0 - i, "strategy": st.to_dict(),
                        "achieved_macs": int(macs)})
    search = SimpleNamespace(records=records, model=model, example_inputs=x, calibration=calib, plan=plan,
                             counter="macs")
    batches = list(at.cifar10("val", batch_size=16, shuffle=True, seed=0, limit=32))
    proxy = KDProxy(model, batches[:1], batches[1:], recipe=at.Recipe.preset("cifar", epochs=1))
    seq = rerank_candidates(search, proxy, top=2)
    par = rerank_candidates(search, proxy, top=2, executor=RayExecutor(workers=1))
    pd.testing.assert_frame_equal(par.frame, seq.frame, check_exact=True)
    assert par.revision == seq.revision



def test_an_unpickled_plan_keeps_its_scores_and_refuses_to_rescore(r20):
    cloudpickle = pytest.importorskip("ray.cloudpickle")
    model, x, plan = r20
    scores, _ = plan.importance("magnitude_l2")
    copy = cloudpickle.loads(cloudpickle.dumps(plan))  # as a Ray worker receives it
    theirs, _ = copy.importance("magnitude_l2")
    assert all(bool((theirs[i][0] == scores[i][0]).all()) for i in scores)
    st = at.Strategy(importance="magnitude_l2", pruning_ratio=0.3)
    mine, theirs = plan.apply(plan.select(st), st)[0], copy.apply(copy.select(st), st)[0]
    assert all(torch.equal(a, b) for a, b in zip(mine.state_dict().values(), theirs.state_dict().values(), strict=True))
    with pytest.raises(ToolkitError, match="unpickled"):
        copy.importance("lamp")


def test_search_on_ray_workers_measures_the_sequential_table(r20_calibrated, ray_local):
    """``SearchBudget(executor="ray")`` fans the search's sensitivity probes out and changes nothing."""
    model, x, calib, plan = r20_calibrated
    preset = at.SearchPreset("tiny", "one share, one revision", fractions=(0.5,), adaptive=False,
                             probe_images=(None, None), max_revisions=1)
    runs = []
    for executor in (None, "ray"):
        proxy = at.proxy_accuracy(at.cifar10("val", batch_size=16, shuffle=True, seed=0), batches=1, bn_batches=1)
        search = at.AgenticSearch(model, "50%", x, evaluator=proxy, preset=preset,
                                  budget=at.SearchBudget(executor=executor),
                                  start=at.SearchStart(plan=plan, calibration=calib),
                                  logging=at.SearchLogging(progress=False))
        runs.append((search.sensitivity.frame, search.run().history["score"].tolist()))
    pd.testing.assert_frame_equal(runs[1][0], runs[0][0], check_exact=True)
    assert runs[1][1] == runs[0][1]
