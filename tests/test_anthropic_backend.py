"""The anthropic backend, driven by the real SDK against a local stand-in Messages API server.

Each scenario the issue lists behaves as specified at the proposal level (what is sent,
what is recorded) and, run through the whole Master loop on a real model, still ends
with a valid, in-band result; the API key never reaches the history file.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch
from anthropic_standin import StandIn

from agentic_toolkit.agents.analysis import propose_strategy
from agentic_toolkit.agents.backends.anthropic_backend import (
    DEFAULT_MODEL,
    TOOL_NAME,
    AnthropicBackend,
)
from agentic_toolkit.agents.backends.base import system_prompt
from agentic_toolkit.pruning.strategy import Strategy

KEY = "sk-ant-test-KEY-0123456789-do-not-log"
SCOPES = pd.DataFrame(
    {"name": ["stage1", "stage2", "stage3"], "kind": ["stage"] * 3, "channels": [16, 32, 64],
     "mac_share": [0.33, 0.32, 0.32], "description": ["stage"] * 3}
)
GOOD = {"importance": "magnitude_l2", "pruning_ratio": 0.3, "multipliers": {"stage3": 1.2}, "rationale": "prune stage3"}


def backend(server, **kw):
    opts = dict(api_key=KEY, base_url=server.url, timeout=2.0, retries=2, backoff=0.01)
    opts.update(kw)
    return AnthropicBackend(**opts)


def propose(server, **kw):
    return propose_strategy(None, SCOPES, [], "20M", backend=backend(server, **kw), base_macs=41_000_000)


def test_sdk_defaults_are_current():
    from anthropic._data import DEPRECATED_MODELS
    from anthropic.types.model import Model

    assert DEFAULT_MODEL not in DEPRECATED_MODELS
    assert DEFAULT_MODEL in Model.__args__[0].__args__  # listed by the installed SDK


def test_valid_tool_call():
    with StandIn([("tool", GOOD)]) as srv:
        p = propose(srv)
    assert not p.fallback and not p.repaired and p.errors == []
    assert p.strategy == Strategy(pruning_ratio=0.3, multipliers={"stage3": 1.2}) and p.rationale == "prune stage3"
    (req,) = srv.requests
    body = req["body"]
    assert req["path"] == "/v1/messages"
    assert body["system"] == system_prompt() and system_prompt().startswith("You are the Analysis agent")
    assert body["model"] == DEFAULT_MODEL and body["tool_choice"] == {"type": "tool", "name": TOOL_NAME}
    schema = body["tools"][0]["input_schema"]
    assert schema["properties"]["pruning_ratio"] == Strategy.json_schema()["properties"]["pruning_ratio"]
    assert "temperature" not in body  # the 2026-10-21 API rejects sampling parameters
    assert body["messages"] == [{"role": "user", "content": p.prompt}]
    assert KEY in req["headers"].get("Authorization", "") + req["headers"].get("x-api-key", "")


def test_malformed_json_gets_one_repair_request():
    with StandIn([("text", '{"pruning_ratio": 0.4,, "multipliers": '), ("tool", GOOD)]) as srv:
        p = propose(srv)
    assert p.repaired and not p.fallback and p.strategy.pruning_ratio == 0.3
    assert len(srv.requests) == 2
    msgs = srv.requests[1]["body"]["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
    assert "not valid JSON" in msgs[2]["content"] and '{"pruning_ratio": 0.4,,' in msgs[2]["content"]
    assert any("not valid JSON" in e for e in p.errors)


def test_out_of_range_values_repair_then_analyst_takes_over():
    bad = {"pruning_ratio": 1.7, "multipliers": {"stage1": 9.0, "stage9": 1.0}}
    with StandIn([("tool", bad), ("tool", {"pruning_ratio": -0.2})]) as srv:
        p = propose(srv)
    assert p.fallback and p.proposer == "analyst" and p.backend == "anthropic"
    assert p.strategy.problems() == [] and 0 < p.strategy.pruning_ratio < 1
    assert len(srv.requests) == 2  # one repair request, no more
    msgs = srv.requests[1]["body"]["messages"]
    tool_use = msgs[1]["content"][0]
    result = msgs[2]["content"][0]
    assert tool_use["type"] == "tool_use" and tool_use["input"] == bad
    assert result["type"] == "tool_result" and result["is_error"] and result["tool_use_id"] == tool_use["id"]
    for needle in ("pruning_ratio must be a number in [0, 1); got 1.7", "multiplier for 'stage1'", "stage9"):
        assert needle in result["content"]
    assert any(e.startswith("after repair: pruning_ratio") for e in p.errors)


def test_rate_limit_then_success():
    with StandIn([("status", 429), ("tool", GOOD)]) as srv:
        p = propose(srv)
    assert not p.fallback and p.strategy.pruning_ratio == 0.3
    assert len(srv.requests) == 2 and "HTTP 429" in p.errors[0]


def test_server_errors_until_retries_give_up():
    with StandIn([("status", 503), ("status", 529), ("status", 500)], default=("tool", GOOD)) as srv:
        p = propose(srv, retries=2)
    assert len(srv.requests) == 3  # first try + 2 retries, then no more
    assert p.fallback and p.proposer == "analyst" and p.strategy.problems() == []
    assert "failed after 3 attempts" in p.errors[-1] and "HTTP 500" in p.errors[-1]
    assert [e.split(":")[1].strip() for e in p.errors[:3]] == ["HTTP 503", "HTTP 529", "HTTP 500"]


def test_hang_past_the_timeout():
    with StandIn(default=("hang", 5.0)) as srv:
        t0 = time.perf_counter()
        p = propose(srv, timeout=0.3, retries=1)
        elapsed = time.perf_counter() - t0
    assert p.fallback and "timed out after 0.3 s" in p.errors[-1]
    assert len(srv.requests) == 2 and elapsed < 3.0


# --- the whole loop on a real model -----------------------------------------------------------------
SCENARIOS = {
    "valid": ([("tool", GOOD)], dict(fallback=False, repaired=False)),
    "malformed": ([("text", "{'pruning_ratio': 0.3"), ("tool", GOOD)], dict(fallback=False, repaired=True)),
    "out_of_range": ([("tool", {"pruning_ratio": 3}), ("tool", {"pruning_ratio": 3})], dict(fallback=True)),
    "429": ([("status", 429), ("tool", GOOD)], dict(fallback=False)),
    "5xx": ([("status", 500)] * 3, dict(fallback=True)),
    "hang": ([("hang", 5.0)] * 2, dict(fallback=True)),
}


@pytest.fixture(scope="module")
def resnet20():
    from agentic_toolkit.models import create_model

    return create_model("cifar_resnet20"), torch.randn(1, 3, 32, 32)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_loop_ends_with_a_valid_result(name, resnet20, tmp_path):
    from agentic_toolkit.agents.history import read_history
    from agentic_toolkit.agents.master import run_agentic_pruning
    from agentic_toolkit.profiling.profile import profile_macs

    model, x = resnet20
    script, expect = SCENARIOS[name]
    target = int(0.5 * profile_macs(model, example_inputs=x).total_macs)
    log = tmp_path / "run.jsonl"
    with StandIn(script, default=("tool", GOOD)) as srv:
        result = run_agentic_pruning(
            model, target, x, backend=backend(srv, timeout=0.4, retries=1), max_revisions=3,
            log_path=log, progress=False,
        )
    assert result.converged and result.revisions == 1
    assert target * 0.95 <= result.macs <= target * 1.01 and result.strategy.problems() == []
    rec = result.records[0]
    for key, value in expect.items():
        assert rec[key] == value, (key, rec)
    assert rec["prompt"] and rec["backend"] == "anthropic"
    assert rec["backend_errors"] or name in ("valid",)
    text = log.read_text()
    assert KEY not in text and "do-not-log" not in text
    kinds = [r["type"] for r in read_history(log)]
    assert kinds == ["header", "revision", "result"]
