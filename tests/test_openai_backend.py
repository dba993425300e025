"""The OpenAI-compatible backend against a stand-in server on 127.0.0.1: structured output,
negotiation with servers that refuse parameters, stop reasons and usage, and a whole search."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from openai_standin import OpenAIStandIn

import agentic_toolkit as at
from agentic_toolkit.agents.analysis import propose_strategy
from agentic_toolkit.agents.backends import make_backend
from agentic_toolkit.agents.backends.openai_compat import (
    FORMATS,
    named_fields,
    openai_system_prompt,
    response_schema,
)
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.pruning.strategy import Strategy

SCOPES = pd.DataFrame({"name": ["stage1", "stage2", "stage3"], "kind": ["stage"] * 3,
                       "channels": [16, 32, 64], "mac_share": [0.3, 0.3, 0.4], "description": ["stage"] * 3})
GOOD = {"pruning_ratio": 0.33, "multipliers": {"stage3": 1.2}, "rationale": "stage3 holds most MACs"}


class FakeProfile:
    total_macs = 4_000_000_000

    def summary(self, max_rows: int = 20) -> str:
        return "PROFILE-SUMMARY"


def _backend(srv, **kw):
    opts = dict(base_url=srv.url, model="stand-in-model", backoff=0.01, timeout=5, retries=2)
    opts.update(kw)
    return make_backend("openai", **opts)


def _propose(be):
    return propose_strategy(FakeProfile(), SCOPES, [], "2G", backend=be)


def test_json_schema_reply():
    with OpenAIStandIn([("json", GOOD)]) as srv:
        be = _backend(srv)
        p = _propose(be)
    assert not p.fallback and not p.repaired and p.strategy.pruning_ratio == 0.33
    assert p.strategy.multipliers == {"stage3": 1.2} and p.rationale == "stage3 holds most MACs"
    body = srv.requests[0]["body"]
    assert srv.requests[0]["path"] == "/v1/chat/completions" and len(srv.requests) == 1
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "strategy"
    assert fmt["json_schema"]["strict"] is False
    schema = fmt["json_schema"]["schema"]
    assert "$schema" not in schema and schema["required"] == ["pruning_ratio"]
    assert schema["properties"]["importance"] == Strategy.json_schema()["properties"]["importance"]
    assert schema["properties"]["rationale"]["type"] == "string" and schema["properties"]["rationale"]["maxLength"] > 0
    assert body["temperature"] == 0 and body["max_tokens"] == 2048 and body["model"] == "stand-in-model"
    # its own system prompt: JSON only, no tool (the Claude prompt names a tool this backend never sends)
    assert body["messages"][0] == {"role": "system", "content": openai_system_prompt()}
    assert "JSON object" in openai_system_prompt() and "tool" not in openai_system_prompt()
    assert body["messages"][1] == {"role": "user", "content": p.prompt} and "tools" not in body
    meta = p.meta
    assert meta["response_format"] == "json_schema" and meta["adaptations"] == [] and meta["dropped_params"] == []
    assert meta["stop_reason"] == "end" and meta["usage"] == {"input_tokens": 120, "output_tokens": 30}
    assert be.describe()["response_format"] == "json_schema" and be.describe()["sampling"] == {"temperature": 0.0}


def test_reply_fields_usage_and_truncation():
    with OpenAIStandIn([("json", GOOD), ("length", '{"pruning_ratio": 0.4, "rationale": "aaaa')],
                       usage=(500, 77)) as srv:
        be = _backend(srv)
        schema = Strategy.json_schema()
        first = be.request([{"role": "user", "content": "hi"}], schema)
        cut = be.request([{"role": "user", "content": "hi"}], schema)
    assert first.stop_reason == "end" and not first.truncated and first.seconds is not None and first.seconds >= 0
    assert first.usage == {"input_tokens": 500, "output_tokens": 77}
    assert cut.stop_reason == "max_tokens" and cut.truncated and cut.meta["finish_reason"] == "length"


def test_truncated_reply_gets_repaired():
    with OpenAIStandIn([("length", '{"pruning_ratio": 0.4, "rationale": "aaaa'), ("json", GOOD)]) as srv:
        p = _propose(_backend(srv))
    assert p.repaired and not p.fallback and p.strategy.pruning_ratio == 0.33
    assert p.meta["stop_reason"] == "max_tokens" and p.meta["repair"]["stop_reason"] == "end"


@pytest.mark.parametrize("style", ["openai", "fastapi", "llama_cpp_python", "bare"])
def test_server_refusing_json_schema_gets_json_object(style):
    with OpenAIStandIn([("json", GOOD), ("json", {**GOOD, "pruning_ratio": 0.35})], reject={"json_schema"},
                       style=style) as srv:
        be = _backend(srv)
        p = _propose(be)
        p2 = _propose(be)  # remembered: the second proposal does not ask for json_schema again
    assert not p.fallback and p.strategy.pruning_ratio == 0.33 and p2.strategy.pruning_ratio == 0.35
    types = [r["body"]["response_format"]["type"] for r in srv.requests]
    assert types == ["json_schema", "json_object", "json_object"]
    sent = srv.requests[1]["body"]["response_format"]
    assert sent == {"type": "json_object", "schema": srv.requests[0]["body"]["response_format"]["json_schema"]["schema"]}
    assert p.meta["response_format"] == "json_object+schema" and p2.meta["adaptations"] == []
    assert "json_schema -> json_object+schema" in p.meta["adaptations"][0]
    assert any("json_schema -> json_object+schema" in e for e in p.errors)  # recorded, not silent
    d = be.describe()
    assert d["response_format"] == "json_object+schema" and len(d["adaptations"]) == 1
    if style != "llama_cpp_python":  # the 500 of a validation error is not retried as if transient
        assert all(r["body"].get("temperature") == 0 for r in srv.requests)


def test_server_refusing_every_response_format_gets_plain_text():
    reply = "Here you go:\n```json\n" + json.dumps(GOOD) + "\n```"
    with OpenAIStandIn([("text", reply)], reject={"json_schema", "json_object"}) as srv:
        be = _backend(srv)
        p = _propose(be)
    assert not p.fallback and p.strategy.pruning_ratio == 0.33
    assert [r["body"].get("response_format", {}).get("type") for r in srv.requests] == [
        "json_schema", "json_object", "json_object", None]
    assert "response_format" not in srv.requests[-1]["body"]
    assert p.meta["response_format"] == "text" and len(p.meta["adaptations"]) == 3
    assert be.describe()["response_format"] == "text" and not be.json_mode


@pytest.mark.parametrize("param", ["temperature", "top_p", "seed"])
def test_server_refusing_a_sampling_parameter_retries_without(param):
    with OpenAIStandIn([("json", GOOD), ("json", GOOD)], reject={param}) as srv:
        be = _backend(srv, temperature=0.2, top_p=0.9, seed=7)
        p = _propose(be)
        be.request([{"role": "user", "content": "again"}], Strategy.json_schema())
    assert not p.fallback and p.strategy.pruning_ratio == 0.33
    assert len(srv.requests) == 3 and param in srv.requests[0]["body"]
    assert all(param not in r["body"] for r in srv.requests[1:])
    others = {"temperature": 0.2, "top_p": 0.9, "seed": 7}
    others.pop(param)
    assert all(srv.requests[-1]["body"][k] == v for k, v in others.items())  # only the named one goes
    assert srv.requests[-1]["body"]["response_format"]["type"] == "json_schema"
    assert p.meta["dropped_params"] == [param] and be.describe()["dropped_params"] == [param]
    assert param not in be.describe()["sampling"]


def test_unnamed_400_on_first_request_steps_down_then_drops_sampling():
    with OpenAIStandIn([("json", GOOD)], reject={"json_schema", "json_object", "temperature"}, style="bare") as srv:
        be = _backend(srv)
        p = _propose(be)
    assert not p.fallback and p.strategy.pruning_ratio == 0.33
    bodies = [r["body"] for r in srv.requests]
    assert [b.get("response_format", {}).get("type") for b in bodies] == [
        "json_schema", "json_object", "json_object", None, None]
    assert "temperature" in bodies[3] and "temperature" not in bodies[4]
    assert p.meta["response_format"] == "text" and p.meta["dropped_params"] == ["temperature"]


def test_unnamed_400_after_a_working_request_is_an_error_and_keeps_the_settings():
    with OpenAIStandIn([("json", GOOD)]) as srv:
        be = _backend(srv)
        assert not _propose(be).fallback
        srv.reject = {"any400"}
        p = _propose(be)
    assert p.fallback and "HTTP 400" in p.errors[-1]
    assert len(srv.requests) == 2  # no guessing once the settings are known to work
    assert be.describe()["response_format"] == "json_schema"


def test_a_400_that_no_change_fixes_restores_the_settings():
    with OpenAIStandIn(reject={"any400"}) as srv:
        be = _backend(srv)
        p = _propose(be)
    assert p.fallback and p.proposer == "analyst" and "HTTP 400" in p.errors[-1]
    # every variant tried once (3 format steps, then no sampling), then given up; bounded
    assert len(srv.requests) == len(FORMATS) + 1
    assert be.describe()["response_format"] == "json_schema" and be.describe()["dropped_params"] == []


def test_a_400_about_the_prompt_is_not_answered_by_dropping_parameters():
    class TooLong(OpenAIStandIn):
        def refusal(self, body):
            return 400, {"error": {"message": "This model's maximum context length is 2048 tokens.",
                                   "type": "invalid_request_error", "param": "messages",
                                   "code": "context_length_exceeded"}}

    with TooLong() as srv:
        p = _propose(_backend(srv))
    assert p.fallback and "context length" in p.errors[-1] and len(srv.requests) == 1


def test_max_tokens_renamed_for_models_that_want_max_completion_tokens():
    with OpenAIStandIn([("json", GOOD)], reject={"max_tokens"}) as srv:
        be = _backend(srv, max_tokens=300)
        p = _propose(be)
    assert not p.fallback
    assert srv.requests[-1]["body"]["max_completion_tokens"] == 300 and "max_tokens" not in srv.requests[-1]["body"]


def test_transient_errors_still_retried_and_key_sent(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-SECRET")
    with OpenAIStandIn([("status", 429), ("json", GOOD)]) as srv:
        be = _backend(srv)
        p = _propose(be)
    assert not p.fallback and "HTTP 429" in p.errors[0] and "sk-local-SECRET" in be.secrets()
    assert srv.requests[-1]["headers"]["Authorization"] == "Bearer sk-local-SECRET"
    assert "sk-local-SECRET" not in json.dumps(be.describe())


def test_options_checked_and_old_json_mode_spelling():
    with pytest.raises(ToolkitError, match="response_format"):
        make_backend("openai", base_url="http://127.0.0.1:9", response_format="xml")
    be = make_backend("openai", base_url="http://127.0.0.1:9", json_mode=False, system="Answer in JSON.")
    body = be.body([{"role": "user", "content": "p"}], Strategy.json_schema())
    assert "response_format" not in body and body["messages"][0]["content"] == "Answer in JSON."
    assert named_fields("maximum context length exceeded", ["seed", "messages"]) == set()
    schema = response_schema(Strategy.json_schema())
    assert "$schema" not in schema and schema["required"] == ["pruning_ratio"] and "rationale" in schema["properties"]
    own = be.body([{"role": "user", "content": "p"}], Strategy.json_schema(), system="custom")
    assert own["messages"][0] == {"role": "system", "content": "custom"} and be.default_system() == "Answer in JSON."
    assert named_fields('{"error": {"param": "top_p", "message": "bad"}}', ["top_p"]) == {"top_p"}


def test_search_with_a_server_refusing_temperature_and_json_schema(one_thread):
    """The issue's case: such a server used to get every revision from the analyst fallback."""
    torch.manual_seed(0)
    model = at.create_model("cifar_resnet20")
    x = torch.randn(1, 3, 32, 32)
    script = [("json", {"pruning_ratio": r, "rationale": f"try {r}"}) for r in (0.3, 0.35, 0.4)]
    with OpenAIStandIn(script, reject={"json_schema", "temperature"}, style="llama_cpp_python") as srv:
        be = _backend(srv)
        search = at.AgenticSearch(model, "12M", x, backend=be, max_revisions=3, logging=at.SearchLogging(progress=False),
                                  budget=at.SearchBudget(solve_budget=False))
        result = search.run()
    assert result.backend == "openai" and result.revisions == 3
    revs = result.records
    assert all(r["proposer"] == "openai" and not r["fallback"] for r in revs)
    assert [r["proposed"]["pruning_ratio"] for r in revs] == [0.3, 0.35, 0.4]
    assert len(srv.requests) == 5  # two refusals on the first request, none after: the settings are kept
    assert be.describe()["response_format"] == "json_object+schema" and be.describe()["dropped_params"] == ["temperature"]
