"""Strict replies: the schema says which fields are required; an empty ``{}`` or a reply cut
off at the token limit gets the repair request, then the analyst's fallback, and the record
says why. Also the system prompt template (``system=``) and the token / time accounting."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from anthropic_standin import StandIn

import agentic_toolkit as at
from agentic_toolkit.agents.analysis import REQUIRED_FIELDS, propose_strategy
from agentic_toolkit.agents.backends.anthropic_backend import AnthropicBackend
from agentic_toolkit.agents.backends.base import Reply, system_prompt
from agentic_toolkit.agents.history import read_history
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.units import format_macs

KEY = "sk-ant-strict-KEY-42"
SCOPES = pd.DataFrame({"name": ["stage1", "stage2", "stage3"], "kind": ["stage"] * 3, "channels": [16, 32, 64],
                       "mac_share": [0.33, 0.32, 0.32], "description": ["stage"] * 3})
GOOD = {"pruning_ratio": 0.3, "multipliers": {"stage3": 1.2}, "rationale": "prune stage3"}
CUT = {"pruning_ratio": 0.3, "multipliers": {"stage3": 1.2}}  # a tool call cut off before its rationale


def propose(srv, **kw):
    backend = AnthropicBackend(api_key=KEY, base_url=srv.url, retries=0)
    return propose_strategy(None, SCOPES, [], "20M", backend=backend, base_macs=41_000_000, **kw)


def test_the_schema_says_what_is_required():
    assert Reply("").truncated is False and Reply("", stop_reason="max_tokens").truncated
    with StandIn([("tool", GOOD)]) as srv:
        p = propose(srv)
    body = srv.requests[0]["body"]
    schema = body["tools"][0]["input_schema"]
    assert schema["required"] == list(REQUIRED_FIELDS) == ["pruning_ratio"]
    assert "rationale" in schema["properties"] and "$schema" not in schema
    assert '"required": ["pruning_ratio"]' in p.prompt  # the prompt shows the same schema
    assert p.meta["stop_reason"] == "tool" and not p.repaired and not p.fallback


@pytest.mark.parametrize(
    "first, problem",
    [(("tool", {}), "the reply is an empty object"), (("cut", CUT), "cut off at the token limit")],
)
def test_empty_or_truncated_reply_is_repaired(first, problem):
    with StandIn([first, ("tool", GOOD)]) as srv:
        p = propose(srv)
    assert p.repaired and not p.fallback and p.strategy.multipliers == {"stage3": 1.2}
    assert any(problem in e for e in p.errors)
    repair = srv.requests[1]["body"]["messages"]
    assert repair[2]["content"][0]["is_error"] and problem in repair[2]["content"][0]["content"]
    usage = [r["usage"] for r in srv.requests]
    assert p.llm_input_tokens == sum(u["input_tokens"] for u in usage)  # both requests counted
    assert p.llm_output_tokens == sum(u["output_tokens"] for u in usage) and p.llm_seconds > 0


@pytest.mark.parametrize("action", [("tool", {}), ("cut", CUT)])
def test_empty_or_truncated_twice_falls_back_to_the_analyst(action):
    with StandIn([action, action]) as srv:
        p = propose(srv)
    assert p.fallback and p.proposer == "analyst" and not p.repaired and len(srv.requests) == 2
    assert any(e.startswith("after repair:") for e in p.errors) and p.repair_prompt
    assert p.strategy.problems() == [] and p.meta["repair"]["stop_reason"] in ("tool", "max_tokens")
    rec = p.to_record()
    assert rec["fallback"] and rec["backend_errors"] == p.errors and rec["llm_input_tokens"] > 0


def test_truncated_openai_reply_is_repaired():
    from openai_standin import OpenAIStandIn

    from agentic_toolkit.agents.backends import make_backend

    with OpenAIStandIn([("length", '{"pruning_ratio": 0.3, "multip'), ("json", GOOD)]) as srv:
        be = make_backend("openai", base_url=srv.url, retries=0, timeout=5)
        p = propose_strategy(None, SCOPES, [], "20M", backend=be, base_macs=41_000_000)
    assert p.repaired and any("cut off at the token limit" in e for e in p.errors)


def test_custom_system_prompt_is_rendered_sent_and_recorded(tmp_path):
    template = "You prune to $target_macs MACs. Call the propose_strategy tool."
    with StandIn([("tool", GOOD)] * 2) as srv:
        p = propose(srv, system=template)
        path = tmp_path / "system.txt"
        path.write_text("From a file: $base_macs baseline.\n")
        q = propose(srv, system=path)
    assert srv.requests[0]["body"]["system"] == p.system_prompt == "You prune to 20M MACs. Call the propose_strategy tool."
    assert srv.requests[1]["body"]["system"] == q.system_prompt == "From a file: 41M baseline."
    with StandIn([("tool", GOOD)]) as srv:
        d = propose(srv)
    assert srv.requests[0]["body"]["system"] == d.system_prompt == system_prompt()
    with pytest.raises(ToolkitError, match="takes no system prompt"):
        propose_strategy(None, SCOPES, [], "20M", backend=lambda s: "{}", base_macs=41_000_000, system="hi")


def test_the_loop_records_why_and_sums_usage(r20, tmp_path):
    model, x, plan = r20
    log = tmp_path / "h.jsonl"
    script = [("tool", {}), ("tool", {}),                              # revision 1: repair fails -> analyst
              ("cut", CUT), ("tool", GOOD),                            # revision 2: truncated -> repaired
              ("tool", {**GOOD, "multipliers": {"stage1": 0.9}})]     # revision 3: fine
    system = "Prune $target_macs. Call the propose_strategy tool."
    with StandIn(script) as srv:
        backend = AnthropicBackend(api_key=KEY, base_url=srv.url, retries=0)
        res = at.run_agentic_pruning(model, int(0.5 * plan.base_macs), x, backend=backend, plan=plan, log_path=log,
                                     evaluator=lambda m: 1.0, patience=5, max_revisions=3, progress=False,
                                     system=system, sensitivity=False)
    recs = res.records
    assert [(r["fallback"], r["repaired"]) for r in recs] == [(True, False), (False, True), (False, False)]
    assert any("empty object" in e for e in recs[0]["backend_errors"])
    assert any("cut off" in e for e in recs[1]["backend_errors"]) and recs[2]["backend_errors"] == []
    assert res.proposers == "analyst ×1 (fallback), anthropic ×2"
    sent = [r["usage"] for r in srv.requests]
    assert res.llm_input_tokens == sum(u["input_tokens"] for u in sent) == sum(r["llm_input_tokens"] for r in recs)
    assert res.llm_tokens == res.llm_input_tokens + res.llm_output_tokens
    assert res.llm_seconds == pytest.approx(sum(r["llm_seconds"] for r in recs), abs=1e-2)
    out = res.to_dict()
    assert out["proposers"] == res.proposers and out["llm_tokens"] == res.llm_tokens
    assert "proposed by analyst ×1 (fallback), anthropic ×2" in res.summary() and "tokens" in res.summary()
    header = read_history(log)[0]
    assert header["system_prompt"] == system and len(header["templates"]["system"]) == 64
    assert all(r["system_prompt"] == system.replace("$target_macs", format_macs(res.target_macs)) for r in recs)
    assert all(r["body"]["system"] == recs[0]["system_prompt"] for r in srv.requests)
    assert json.loads(log.read_text().splitlines()[-1])["proposers"] == res.proposers
    with pytest.raises(ToolkitError, match="takes no system prompt"):
        at.AgenticSearch(model, int(0.5 * plan.base_macs), x, backend=lambda s: "{}", start=at.SearchStart(plan=plan),
                         prompts=at.SearchPrompts(system="You prune."))
    never = tmp_path / "never.jsonl"
    with pytest.raises(ToolkitError, match="system prompt template file not found"):
        at.run_agentic_pruning(model, int(0.5 * plan.base_macs), x, backend=backend, log_path=never,
                               system=tmp_path / "nope.txt")
    assert not never.exists()
