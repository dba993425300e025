"""Does the agent's latency view help under a latency budget? Adapted CIFAR ResNet-56, CPU, batch 1
(see ``reproduce.latency_agent``). Writes data/latency_agent.csv.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/latency_agent.py --threads 2     # idle machine, minutes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agentic_toolkit.tables import machine_line, write_table
from reproduce.common import output_dir
from reproduce.latency_agent import latency_agent_study


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", default="80%,65%", help="latency budgets, comma-separated (%% of the unpruned model's)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--revisions", type=int, default=16, help="revisions per search (patience: half)")
    ap.add_argument("--repeats", type=int, default=20, help="interleaved timing pairs")
    ap.add_argument("--smoke", action="store_true", help="3 revisions, 3 pairs, -> data/smoke/")
    ap.add_argument("--out-dir", type=Path, default=None, help="default data/ (--smoke: data/smoke/)")
    args = ap.parse_args(argv)
    study = latency_agent_study(tuple(args.latency.split(",")), args.threads, 3 if args.smoke else args.revisions,
                                3 if args.smoke else args.repeats)
    out = write_table(study.to_frame(), (args.out_dir or output_dir(args.smoke)) / "latency_agent.csv")
    print(f"{study.summary()}\n{machine_line(study.report['threads'])}\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
