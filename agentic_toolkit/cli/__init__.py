"""``agentic-toolkit`` command line: one sub-command per module of ``agentic_toolkit.cli``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Commands are imported only when used.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import ToolkitError

COMMANDS = {
    "profile": "Profile a model's MACs and parameters (Profiling Agent).",
    "prune": "Fit a MAC budget and prune a model.",
    "search": "Run the agentic search to a MAC budget.",
    "bench": "Benchmark latency of a model, optionally against a baseline.",
    "finetune": "Fine-tune a (pruned) model, optionally distilled; runs under torchrun (DDP).",
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentic-toolkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only import the command that runs
            importlib.import_module(f".{name}", __package__).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    module = importlib.import_module(f".{args.command}", __package__)
    try:
        return int(module.run(args) or 0)
    except ToolkitError as exc:
        print(f"agentic-toolkit {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
