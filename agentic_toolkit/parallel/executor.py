"""Where parallel work runs: in this process (``executor=None``) or on Ray (``"ray"``).

``executor="ray"`` uses the Ray this process is already connected to; otherwise it connects
to ``RAY_ADDRESS`` when that is set, else starts a local Ray on this machine for the call and
stops it afterwards. :class:`RayExecutor` says the same with options: a cluster ``address``
(``"auto"``: the cluster ``ray start`` runs on this node; ``"ray://HOST:10001"``: a remote
one), the CPUs of a local Ray, how many fan-out workers, retries and torch threads per worker.
Ray is an optional dependency (``pip install agentic_toolkit[cluster]``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import ToolkitError


@dataclass(frozen=True)
class RayExecutor:
    """How to run on Ray.

    Args:
        address: a running cluster (``"auto"`` or ``"ray://HOST:PORT"``); None: the Ray this
            process is connected to, else ``RAY_ADDRESS``, else a local Ray started for the call.
        num_cpus: CPUs of a local Ray (None: all of this machine's).
        workers: fan-out workers (:mod:`.pool`; None: one per CPU of the cluster).
        max_retries: re-runs of a study task whose worker process died.
        threads: torch threads of each fan-out worker (a study task gets its ``num_cpus``).
        init_kwargs: more keywords for ``ray.init`` (e.g. ``runtime_env``).

    Example:
        >>> RayExecutor(num_cpus=2).workers is None
        True
    """

    address: str | None = None
    num_cpus: int | None = None
    workers: int | None = None
    max_retries: int = 3
    threads: int = 1
    init_kwargs: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def session(self) -> Iterator[Any]:
        """Yield the ``ray`` module connected as this executor says; a Ray started here stops
        on exit, one that was already running stays."""
        ray = import_ray()
        if ray.is_initialized():
            yield ray
            return
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, **self.init_kwargs}
        if address is None and self.num_cpus is not None:
            kwargs["num_cpus"] = self.num_cpus
        ray.init(address=address, **kwargs)
        try:
            yield ray
        finally:
            ray.shutdown()


Executor = RayExecutor | str | None


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ToolkitError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ToolkitError("executor='ray' needs Ray: pip install 'agentic_toolkit[cluster]' "
                           f"(or pip install ray) ({exc})") from None
    return ray


def resolve_executor(executor: Executor) -> RayExecutor | None:
    """None (run in this process) or the :class:`RayExecutor` that ``executor`` names.

    Example:
        >>> resolve_executor(None) is None, resolve_executor("ray")
        (True, RayExecutor(address=None, num_cpus=None, workers=None, max_retries=3, threads=1, init_kwargs={}))
    """
    if executor is None or isinstance(executor, RayExecutor):
        return executor
    if isinstance(executor, str) and executor.lower() == "ray":
        return RayExecutor()
    raise ToolkitError(f"executor must be None, 'ray' or a RayExecutor, got {executor!r}")


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--workers``, ``--address`` and ``--gpus-per-task`` of a study's command line."""
    parser.add_argument("--workers", type=int, default=1,
                        help="1: run every task in this process; N > 1: a local Ray with N CPUs")
    parser.add_argument("--address", default=None,
                        help="run on a Ray cluster: auto (the cluster on this node) or ray://HOST:PORT "
                        "(default: $RAY_ADDRESS when set)")
    parser.add_argument("--gpus-per-task", type=float, default=0.0,
                        help="GPUs each task asks Ray for (fractions share a GPU)")


def executor_from_args(args: argparse.Namespace) -> RayExecutor | None:
    """The executor of :func:`add_executor_arguments`' flags: a cluster with ``--address`` or
    ``RAY_ADDRESS``, a local Ray with ``--workers N > 1``, else None (in this process)."""
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    if address is not None:
        return RayExecutor(address=address)
    if args.workers > 1 or args.gpus_per_task > 0:
        return RayExecutor(num_cpus=max(1, args.workers))
    return None
