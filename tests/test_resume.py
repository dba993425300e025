"""Exact resume: a search stopped between revisions (or SIGKILLed) and resumed ends with the
records of the uninterrupted search, with every backend, also after a divergence takeover;
a resume with anything that changes the outcome is refused, naming each field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from anthropic_standin import StandIn, revision_of

import agentic_toolkit as at
from agentic_toolkit.agents.backends import make_backend
from agentic_toolkit.agents.backends.anthropic_backend import AnthropicBackend
from agentic_toolkit.agents.history import read_history
from agentic_toolkit.agents.settings import grouped_options
from agentic_toolkit.errors import ToolkitError

HERE = Path(__file__).resolve().parent
KEY = "sk-ant-resume-KEY-0123456789-do-not-log"
OPENAI_KEY = "sk-openai-resume-KEY-987"
VOLATILE = ("elapsed_s", "started", "log_path", "llm_seconds", "seconds")

# what a deterministic language model answers for each revision (different shapes, so no repeats)
ANSWERS = {
    1: {"pruning_ratio": 0.3, "rationale": "start even"},
    2: {"pruning_ratio": 0.3, "multipliers": {"stage3": 1.2}, "rationale": "stage3 is wide"},
    3: {"pruning_ratio": 0.3, "multipliers": {"stage1": 0.8}, "rationale": "protect stage1"},
    4: {"pruning_ratio": 0.3, "multipliers": {"stage2": 1.1, "stage1": 0.9}, "rationale": "shift to stage2"},
}
SEESAW = {1: 0.05, 2: 0.7, 3: 0.06, 4: 0.69, 5: 0.07}  # diverges (sign oscillation) at revision 3


def weight_mass(model) -> float:
    """A cheap deterministic score: the absolute weight mass the pruned model kept."""
    return float(sum(p.detach().abs().sum() for p in model.parameters()))


def answer(body):
    """The stand-in's deterministic model: the answer depends on the revision asked for only."""
    return ("tool", ANSWERS[revision_of(body)])


def by_revision(prompt: str) -> str:
    """The same model as a plain callable."""
    rev = int(prompt.split("This is revision ")[1].split()[0])
    return json.dumps(ANSWERS[rev])


def strip(records):
    out = []
    for r in records:
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        if isinstance(r.get("backend"), dict):  # the header: the stand-in's port is operational
            r["backend"] = {k: v for k, v in r["backend"].items() if k != "base_url"}
        out.append(r)
    return out


def _search(r20, backend, log, **kw):
    model, x, plan = r20
    opts = dict(max_revisions=4, patience=5, evaluator=weight_mass, solve_budget=True, plan=plan, progress=False,
                sensitivity=False)  # the backends' own proposals from revision 2 on (no sensitivity seeds)
    opts.update(kw)
    return at.AgenticSearch(model, int(0.5 * plan.base_macs), x, backend=backend, **grouped_options(log_path=log, **opts))


def _backends(srv):
    """Backend factories (a fresh backend object per session, as after a restart)."""
    return {
        "analyst": lambda: "analyst",
        "grid": lambda: "grid",
        "callable": lambda: by_revision,
        "anthropic": lambda: AnthropicBackend(api_key=KEY, base_url=srv.url, timeout=5.0, retries=1, backoff=0.01),
    }


def _run_split(r20, make, tmp_path, steps: int, **kw):
    """The uninterrupted search, and one stopped after ``steps`` revisions then resumed."""
    straight = _search(r20, make(), tmp_path / "straight.jsonl", **kw).run()
    first = _search(r20, make(), tmp_path / "split.jsonl", **kw)
    for _ in range(steps):
        first.step()
    del first  # the session ends between revisions
    resumed = _search(r20, make(), tmp_path / "split.jsonl", resume=True, **kw)
    assert len(resumed.records) == steps
    return straight, resumed.run()


@pytest.mark.parametrize("name", ["analyst", "grid", "callable", "anthropic", "openai"])
def test_resume_equals_the_uninterrupted_search(name, r20, tmp_path):
    kw = dict(solve_budget=False) if name == "grid" else {}
    if name == "openai":
        from openai_standin import OpenAIStandIn

        script = [("json", ANSWERS[r]) for r in (1, 2, 3, 4)]
        with OpenAIStandIn(script * 2) as osrv:
            make = lambda: make_backend(  # noqa: E731
                "openai", base_url=osrv.url, api_key=OPENAI_KEY, timeout=5, retries=1, backoff=0.01
            )
            straight, resumed = _run_split(r20, make, tmp_path, 2, **kw)
        secret = OPENAI_KEY
    else:
        with StandIn(respond=answer) as srv:
            straight, resumed = _run_split(r20, _backends(srv)[name], tmp_path, 2, **kw)
        secret = KEY
    a, b = read_history(tmp_path / "split.jsonl"), read_history(tmp_path / "straight.jsonl")
    assert strip(a) == strip(b)  # same header, same revisions, same result line
    assert [r["type"] for r in a] == ["header"] + ["revision"] * straight.revisions + ["result"]
    assert (resumed.macs, resumed.score, resumed.strategy) == (straight.macs, straight.score, straight.strategy)
    assert resumed.proposers == straight.proposers and resumed.llm_tokens == straight.llm_tokens
    assert resumed.score is None or resumed.score == weight_mass(resumed.model)
    assert secret not in (tmp_path / "split.jsonl").read_text()
    if name in ("anthropic", "openai"):
        assert straight.llm_tokens > 0 and straight.proposers == f"{name} ×{straight.revisions}"


def _seesaw(body):
    return ("tool", {"pruning_ratio": SEESAW[revision_of(body)], "rationale": "swing"})


@pytest.mark.parametrize("steps", [3, 4])
def test_resume_after_a_takeover_equals_the_uninterrupted_search(steps, r20, tmp_path):
    """The LLM diverges at revision 3: revision 4 is the analyst's, also when resumed right after 3."""
    with StandIn(respond=_seesaw) as srv:
        make = lambda: AnthropicBackend(api_key=KEY, base_url=srv.url, retries=0)  # noqa: E731
        straight, resumed = _run_split(r20, make, tmp_path, steps, solve_budget=False, evaluator=None, max_revisions=6)
        asked = sorted(revision_of(r["body"]) for r in srv.requests)
    recs = straight.records
    assert "oscillation" in recs[2]["divergence"] and recs[2]["handover"] == "analyst"
    assert all(r["proposer"] == "analyst" and r["takeover"] for r in recs[3:]) and straight.revisions >= 4
    assert asked == [1, 1, 2, 2, 3, 3]  # revisions 1-3 by the LLM, once per run; never revision 4
    assert strip(read_history(tmp_path / "split.jsonl")) == strip(read_history(tmp_path / "straight.jsonl"))
    assert resumed.proposers == straight.proposers == f"anthropic ×3, analyst ×{straight.revisions - 3} (takeover)"


def test_resume_refuses_other_settings_naming_each_field(r20, tmp_path):
    log = tmp_path / "h.jsonl"
    with StandIn(respond=answer) as srv:
        backend = AnthropicBackend(api_key=KEY, base_url=srv.url, retries=0)
        _search(r20, backend, log, max_revisions=1).run()
        header = read_history(log)[0]
        assert header["version"] == 2 and header["backend"]["model"] == backend.model
        assert header["evaluator"] == {"name": f"{__name__}.weight_mass", "settings": {}, "data": "data unknown"}
        assert set(header["templates"]) == {"analysis", "repair", "system"} and header["system_prompt"]
        # the same settings resume (operational backend settings may change: another port, timeout)
        other_port = AnthropicBackend(api_key=KEY, base_url="http://127.0.0.1:9", timeout=9.0, retries=0)
        assert _search(r20, other_port, log, max_revisions=1, resume=True).done

        def other_score(model):
            return 0.0

        with pytest.raises(ToolkitError, match="different settings") as err:
            _search(r20, backend, log, max_revisions=2, patience=3, evaluator=other_score, resume=True,
                    system="You are terse. Call the propose_strategy tool.")
    text = str(err.value)
    for needle in ("patience: 5 in the log vs 3 now", "weight_mass", "other_score", "templates:"):
        assert needle in text
    # a larger max_revisions alone is no conflict: it extends the search (agents/extension.py)
    assert "target_macs" not in text and "max_revisions" not in text and KEY not in text


def test_proxy_evaluator_identity_and_data_are_checked(r20, tmp_path):
    model, x, plan = r20
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(2)]
    proxy = at.proxy_accuracy(batches, batches=1)
    log = tmp_path / "p.jsonl"
    _search(r20, "analyst", log, max_revisions=1, evaluator=proxy).run()
    ident = read_history(log)[0]["evaluator"]
    assert ident["name"].endswith("ProxyAccuracy") and ident["data"] == proxy.fingerprint()
    assert ident["settings"] == {"bn_recalibration": True, "bn_batches": 1, "eval_batches": 1, "eval_images": 8}
    same = at.proxy_accuracy([(a.clone(), b.clone()) for a, b in batches], batches=1)
    assert same.fingerprint() == proxy.fingerprint()
    assert _search(r20, "analyst", log, max_revisions=1, evaluator=same, resume=True).done
    other = at.proxy_accuracy([(a + 1, b) for a, b in batches], batches=1)
    with pytest.raises(ToolkitError, match=r"evaluator: .*in the log vs .* now"):
        _search(r20, "analyst", log, max_revisions=1, evaluator=other, resume=True)


def test_sigkilled_anthropic_search_resumes_to_the_same_result(tmp_path, monkeypatch):
    """SIGKILL a real search (keyed anthropic backend, proxy evaluator) mid-revision, resume it here."""
    sys.path.insert(0, str(HERE))
    import search_job

    log, marker = tmp_path / "killed.jsonl", tmp_path / "marker"
    with StandIn(respond=answer) as srv:
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", srv.url)
        search_job.run_and_kill(log, marker, "anthropic")
        assert [r["type"] for r in read_history(log)] == ["header", "revision"]

        model, x, evaluator = search_job.setup()
        resumed = search_job.search(model, x, evaluator, log, resume=True, backend="anthropic")
        model2, x2, evaluator2 = search_job.setup()
        straight = search_job.search(model2, x2, evaluator2, tmp_path / "straight.jsonl", backend="anthropic")
    a, b = read_history(log), read_history(tmp_path / "straight.jsonl")
    assert strip(a) == strip(b) and resumed.revisions >= 2
    assert [r["proposer"] for r in a if r["type"] == "revision"] == ["anthropic"] * resumed.revisions
    assert resumed.score == straight.score == evaluator(resumed.model) == evaluator2(straight.model)
    assert KEY not in log.read_text()
