"""The Analysis agent: prompts, untrusted-reply parsing, backends (offline and HTTP stand-ins)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest

from agentic_toolkit.agents.analysis import (
    history_table,
    load_prompt,
    parse_strategy_reply,
    propose_strategy,
    render_prompt,
)
from agentic_toolkit.agents.backends import (
    AnalystBackend,
    ProposalContext,
    make_backend,
)
from agentic_toolkit.agents.backends.base import system_prompt
from agentic_toolkit.agents.decisions import check_divergence
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.pruning.strategy import Strategy, StrategyError

BASE = 4_000_000_000
SCOPES = pd.DataFrame(
    {
        "name": ["stage1", "stage2", "stage3", "stage4"],
        "kind": ["stage"] * 4,
        "channels": [256, 512, 1024, 2048],
        "mac_share": [0.22, 0.26, 0.36, 0.14],
        "description": ["resnet stage"] * 4,
    }
)


class FakeProfile:
    total_macs = BASE

    def summary(self, max_rows: int = 20) -> str:
        return "PROFILE-SUMMARY: conv 97% of MACs"


def simulate(curve, backend, target, *, max_revisions=5, solve_budget=False):
    """Drive a planner against a synthetic MACs(strategy) curve; return the records."""
    records = []
    low, high = target * 0.95, target * 1.01
    for rev in range(1, max_revisions + 1):
        ctx = ProposalContext(target, BASE, (1.0, 5.0), SCOPES, tuple(records), None, rev, max_revisions, solve_budget)
        strategy, _ = backend.propose(ctx)
        macs = int(curve(strategy))
        rec = {
            "type": "revision", "revision": rev, "strategy": strategy.to_dict(), "proposed": strategy.to_dict(),
            "achieved_macs": macs, "error_pct": 100 * (macs - target) / target, "in_band": low <= macs <= high,
            "score": None,
        }
        records.append(rec)
        if rec["in_band"]:
            break
    return records


def _curve(p, c=1.0, wobble=0.0):
    shares = dict(zip(SCOPES["name"], SCOPES["mac_share"], strict=True))

    def f(s: Strategy):
        kept = 0.02
        for name, share in shares.items():
            r = min(s.pruning_ratio * s.multipliers.get(name, 1.0), 0.9)
            kept += share * (1 - r) ** p
        return BASE * min(1.0, c * kept * (1 + wobble * s.pruning_ratio))

    return f


# --- prompts --------------------------------------------------------------------------------------
def test_packaged_prompt_is_filled_with_profile_scopes_and_history():
    hist = [{"type": "revision", "revision": 1, "strategy": Strategy(pruning_ratio=0.25).to_dict(),
             "achieved_macs": 2_500_000_000, "error_pct": 25.0, "in_band": False, "score": None}]
    p = propose_strategy(FakeProfile(), SCOPES, hist, "2G", backend="analyst")
    assert "PROFILE-SUMMARY" in p.prompt and "stage3" in p.prompt and "36.0%" in p.prompt
    assert "0.2500" in p.prompt and "+25.00%" in p.prompt  # the history table
    assert "revision 2 of at most 5" in p.prompt
    assert "$" not in p.prompt.replace("$schema", "")  # every placeholder was filled
    assert json.loads(p.raw_reply)["pruning_ratio"] == p.strategy.pruning_ratio


def test_custom_template_and_bad_placeholders():
    p = propose_strategy(FakeProfile(), SCOPES, [], "2G", prompt="T=$target_macs B=$base_macs $$5", backend="grid")
    assert p.prompt == "T=2G B=4G $5"
    with pytest.raises(ToolkitError, match=r"unknown placeholder \$nope.*\$history"):
        propose_strategy(FakeProfile(), SCOPES, [], "2G", prompt="$nope")
    assert "$errors" in load_prompt("repair")
    assert load_prompt("system").strip() == system_prompt()  # the LLM backends' system prompt is a packaged file
    with pytest.raises(ToolkitError, match="unknown prompt role"):
        render_prompt(None, {}, role="critic")


def test_history_table_marks_fallbacks_and_failures():
    rows = [
        {"revision": 1, "strategy": Strategy().to_dict(), "achieved_macs": None, "error": "infeasible", "fallback": True},
        {"revision": 2, "strategy": Strategy().to_dict(), "achieved_macs": 1_950_000_000, "error_pct": -2.5,
         "in_band": True, "score": 71.5},
    ]
    table = history_table(rows)
    assert "failed: infeasible" in table and "analyst proposed" in table
    assert "-2.50%" in table and "71.5" in table and "yes" in table


# --- parsing --------------------------------------------------------------------------------------
def test_parse_accepts_fences_wrappers_and_partial_fields():
    base = Strategy(importance="taylor", max_layer_ratio=0.8)
    s, why = parse_strategy_reply('Sure!\n```json\n{"pruning_ratio": 0.41, "rationale": "fit"}\n```', ["stage1"], base)
    assert s.pruning_ratio == 0.41 and s.importance == "taylor" and s.max_layer_ratio == 0.8 and why == "fit"
    s, why = parse_strategy_reply({"strategy": {"pruning_ratio": 0.2, "multipliers": {"stage1": 0.5}}, "rationale": "w"}, ["stage1"])
    assert s.multipliers == {"stage1": 0.5} and why == "w"


def test_parse_lists_every_problem():
    with pytest.raises(StrategyError) as err:
        parse_strategy_reply(
            '{"pruning_ratio": 1.4, "importance": "vibes", "multipliers": {"stage9": 2, "stage1": -1}, "extra": 1}',
            SCOPES["name"].tolist(),
        )
    text = "\n".join(err.value.errors)
    for needle in ("pruning_ratio", "importance", "stage9", "multiplier for 'stage1'", "unknown field 'extra'"):
        assert needle in text
    with pytest.raises(StrategyError, match="not valid JSON"):
        parse_strategy_reply('{"pruning_ratio": 0.4,,}')
    with pytest.raises(StrategyError, match="JSON object"):
        parse_strategy_reply("[0.4]")


# --- callable / repair / fallback ------------------------------------------------------------------
def test_callable_backend_gets_one_repair_request():
    prompts = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        if len(prompts) == 1:
            return '{"pruning_ratio": 2.0}'
        return '{"pruning_ratio": 0.35, "multipliers": {"stage4": 1.2}, "rationale": "fixed"}'

    p = propose_strategy(FakeProfile(), SCOPES, [], "2G", backend=llm)
    assert len(prompts) == 2 and p.repaired and not p.fallback
    assert p.strategy.pruning_ratio == 0.35 and p.rationale == "fixed"
    assert "pruning_ratio must be a number in [0, 1); got 2.0" in prompts[1]  # the errors are quoted
    assert prompts[1].startswith("[user]\n" + p.prompt)  # the conversation, flattened
    assert p.repair_prompt in prompts[1] and p.backend == "llm" and p.proposer == "llm"


def test_callable_backend_falls_back_to_analyst_and_records_why():
    calls = []

    def bad(prompt: str) -> str:
        calls.append(prompt)
        return "I think 40% is good"

    p = propose_strategy(FakeProfile(), SCOPES, [], "2G", backend=bad)
    assert len(calls) == 2 and p.fallback and p.proposer == "analyst" and p.backend == "bad"
    assert any("not valid JSON" in e for e in p.errors) and any(e.startswith("after repair") for e in p.errors)
    assert p.strategy == AnalystBackend().propose(
        ProposalContext(2_000_000_000, BASE, (1.0, 5.0), SCOPES, (), FakeProfile(), 1, 5, False)
    )[0]
    assert p.raw_reply == "I think 40% is good"

    def broken(prompt: str) -> str:
        raise RuntimeError("model crashed")

    p = propose_strategy(FakeProfile(), SCOPES, [], "2G", backend=broken)
    assert p.fallback and "RuntimeError: model crashed" in p.errors[-1]


# --- registry and bad input -------------------------------------------------------------------------
def test_make_backend_errors(monkeypatch):
    with pytest.raises(ToolkitError, match="unknown backend 'analist'.*Did you mean 'analyst'"):
        make_backend("analist")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with pytest.raises(ToolkitError, match="ANTHROPIC_API_KEY"):
        make_backend("anthropic")
    with pytest.raises(ToolkitError, match="bad options"):
        make_backend("grid", colour="red")
    with pytest.raises(ToolkitError, match="tolerance"):
        propose_strategy(FakeProfile(), SCOPES, [], "2G", tolerance=(1.0, -5.0))
    assert make_backend("grid").name == "grid" and make_backend(len).name == "len"


# --- analyst and grid on synthetic MAC curves ----------------------------------------------------------
@pytest.mark.parametrize("p", [1.2, 1.6, 2.0, 2.6])
@pytest.mark.parametrize("frac", [0.3, 0.5, 0.7])
def test_analyst_lands_in_band_within_three_revisions(p, frac):
    target = int(BASE * frac)
    records = simulate(_curve(p, wobble=0.15), AnalystBackend(), target)
    assert records[-1]["in_band"], [r["error_pct"] for r in records]
    assert len(records) <= 3


def test_analyst_is_deterministic_and_learns_from_history():
    target = int(BASE * 0.45)
    a = simulate(_curve(1.5), AnalystBackend(), target)
    b = simulate(_curve(1.5), AnalystBackend(), target)
    assert [r["strategy"] for r in a] == [r["strategy"] for r in b]
    assert len(a) >= 2  # the prior (p=2) misses a p=1.5 curve ...
    assert abs(a[1]["error_pct"]) < abs(a[0]["error_pct"]) / 5  # ... one attempt fixes the fit


def test_analyst_starts_from_the_base_strategy_and_explores_with_scores():
    ctx = ProposalContext(2_000_000_000, BASE, (1.0, 5.0), SCOPES, (), None, 1, 5, False)
    s, why = AnalystBackend().propose(ctx)
    assert s.multipliers == {} and "base strategy" in why
    rec = {"type": "revision", "revision": 1, "strategy": s.to_dict(), "achieved_macs": 1_990_000_000,
           "error_pct": -0.5, "in_band": True, "score": 60.0}
    ctx2 = ProposalContext(2_000_000_000, BASE, (1.0, 5.0), SCOPES, (rec,), None, 2, 5, True)
    s2, why2 = AnalystBackend().propose(ctx2)
    assert "protect 'stage3'" in why2 and s2.multipliers == {"stage3": 0.5}
    rec2 = {**rec, "revision": 2, "strategy": s2.to_dict(), "score": 50.0}
    ctx3 = ProposalContext(2_000_000_000, BASE, (1.0, 5.0), SCOPES, (rec, rec2), None, 3, 5, True)
    s3, why3 = AnalystBackend().propose(ctx3)
    assert s3.multipliers == {"stage3": 1.25} and "not kept: -10 worse" in why3 and "release 'stage3'" in why3


def test_check_divergence():
    assert check_divergence([10.0, 12.0]) is None
    assert "not shrinking" in check_divergence([8.0, 9.0, -9.5])
    assert "oscillation" in check_divergence([10.0, -8.0, 7.0])
    assert check_divergence([10.0, -4.0, 1.5]) is None
    assert check_divergence([20.0, 10.0, 5.0]) is None


# --- OpenAI-compatible endpoint (a local stand-in server) ---------------------------------------------------
class _ChatStandIn:
    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                code, content = outer.script.pop(0)
                data = json.dumps(
                    {"model": "stand-in", "choices": [{"message": {"role": "assistant", "content": content},
                                                       "finish_reason": "stop"}]}
                    if code == 200 else {"error": {"message": "busy"}}
                ).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if code == 429:
                    self.send_header("retry-after", "0.01")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_openai_compatible_backend_over_http(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-local-SECRET")
    srv = _ChatStandIn([(429, ""), (200, "```json\n" + json.dumps({"pruning_ratio": 0.33, "rationale": "r"}) + "\n```")])
    try:
        be = make_backend("openai", base_url=srv.url, model="qwen-local", backoff=0.01, timeout=5)
        assert be.describe()["base_url"] == srv.url and "sk-local-SECRET" in be.secrets()
        p = propose_strategy(FakeProfile(), SCOPES, [], "2G", backend=be)
    finally:
        srv.close()
    assert p.strategy.pruning_ratio == 0.33 and not p.fallback and "HTTP 429" in p.errors[0]
    req = srv.requests[-1]
    assert req["path"] == "/v1/chat/completions" and req["headers"]["Authorization"] == "Bearer sk-local-SECRET"
    body = req["body"]
    assert body["model"] == "qwen-local" and body["temperature"] == 0 and "response_format" in body
    assert body["messages"][0] == {"role": "system", "content": be.default_system()} == {"role": "system", "content": p.system_prompt}
    assert body["messages"][1]["content"] == p.prompt


def test_openai_backend_unreachable_falls_back():
    be = make_backend("openai", base_url="http://127.0.0.1:9", retries=1, backoff=0.01, timeout=2)
    p = propose_strategy(FakeProfile(), SCOPES, [], "2G", backend=be)
    assert p.fallback and "connection" in p.errors[-1]
