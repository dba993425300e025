"""Secrets are redacted by structure: any key (``x``, ``1``, ``sk-...``) leaves every history
line valid JSON with its field names intact, and no string value holding the key."""

from __future__ import annotations

import json

import pytest
from anthropic_standin import StandIn, revision_of

import agentic_toolkit as at
from agentic_toolkit.agents.backends.anthropic_backend import AnthropicBackend
from agentic_toolkit.agents.history import REDACTED, HistoryLog, read_history, redact, to_json_line
from agentic_toolkit.agents.settings import grouped_options

KEYS = ["x", "1", "sk-test-123"]


def strings(value):
    """Every string in a JSON value: string values, and dict keys (as ("key", k))."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield ("key", k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def assert_key_free(value, key):
    for s in strings(value):
        if isinstance(s, tuple):
            assert s[1] != key and (len(key) < 8 or key not in s[1]), s
        else:
            assert key not in s, s


RECORD = {
    "strategy": {"max_layer_ratio": 0.9, "pruning_ratio": 0.1, "multipliers": {"stage1": 1.1}, "importance": "magnitude_l2"},
    "list": ["x marks", 1, 1.5, None, True, {"nested": "key=sk-test-123; x1"}],
    "sk-test-123": "a key as a field name",
    "x": "a key equal to a field name",
    "path": ("tuple", 10),
}


@pytest.mark.parametrize("key", KEYS)
def test_redact_walks_the_structure(key):
    line = to_json_line(RECORD, [key])
    back = json.loads(line)  # valid JSON, whatever the key
    assert back["strategy"]["max_layer_ratio"] == 0.9 and back["strategy"]["pruning_ratio"] == 0.1  # names intact
    assert back["list"][1:5] == [1, 1.5, None, True]  # numbers untouched
    assert_key_free(back, key)
    assert REDACTED in line
    assert redact({"a": ["b"]}, []) == {"a": ["b"]} and redact(RECORD, [""]) is RECORD


def test_long_secret_is_removed_from_keys_too():
    back = json.loads(to_json_line({"sk-test-123": 1, "pre-sk-test-123-post": 2, "max_x": 3}, ["sk-test-123", "x"]))
    assert back == {REDACTED: 1, f"pre-{REDACTED}-post": 2, "max_x": 3}  # a short secret only replaces an equal key
    assert json.loads(to_json_line({"x": 1}, ["x"])) == {REDACTED: 1}


def test_overlapping_secrets_are_redacted_in_one_pass(tmp_path):
    log = HistoryLog(tmp_path / "h.jsonl", ["E", "RED", "sk-E"])
    written = log.append({"text": "sk-E and E and RED"})
    assert written["text"] == f"{REDACTED} and {REDACTED} and {REDACTED}"  # the marker is not re-redacted


def _echo(key):
    """A model that leaks the key it was called with into its answers (text and tool input)."""

    def respond(body):
        rev = revision_of(body)
        if rev == 1 and len(body["messages"]) == 1:
            return ("text", f"my key is {key}, ratio 0.3")  # not JSON: repaired
        return ("tool", {"pruning_ratio": 0.3, "multipliers": {"stage3": 1.0 + 0.1 * rev},
                         "rationale": f"key {key} says so"})

    return respond


@pytest.mark.parametrize("key", KEYS)
def test_keyed_search_history_is_valid_and_key_free(key, r20, tmp_path):
    model, x, plan = r20
    log = tmp_path / "h.jsonl"
    with StandIn(respond=_echo(key)) as srv:

        def search(**kw):
            backend = AnthropicBackend(api_key=key, base_url=srv.url, retries=0)
            return at.AgenticSearch(model, int(0.5 * plan.base_macs), x, backend=backend, evaluator=lambda m: 1.0,
                                    patience=5, max_revisions=3, **grouped_options(
                                        log_path=log, plan=plan, progress=False, sensitivity=False, **kw))

        first = search()
        first.step()
        first.step()
        first.close()  # the session ends between revisions (its lock on the history goes)
        resumed = search(resume=True)  # the header comparison works with any key
        assert len(resumed.records) == 2
        result = resumed.run()
    assert result.revisions == 3 and result.records[0]["repaired"]
    lines = log.read_text().splitlines()
    assert len(lines) == 5  # header, 3 revisions, result
    for line in lines:
        rec = json.loads(line)  # every line parses
        assert_key_free(rec, key)
    for rec in read_history(log)[1:-1]:
        assert set(rec["strategy"]) >= {"max_layer_ratio", "pruning_ratio", "multipliers"}
        assert rec["strategy"]["multipliers"]["stage3"] > 1.0
        assert REDACTED in rec["rationale"]
    if len(key) > 1:
        assert key not in log.read_text()
