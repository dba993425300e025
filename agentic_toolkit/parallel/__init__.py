"""Parallel work beyond one process: study tasks and fanned-out probes, here or on Ray.

``store`` (Task, ResultStore: the durable JSONL record of a study), ``tasks`` (run_tasks: a
study's tasks in this process or as Ray tasks), ``pool`` (worker_pool: calls fanned out to
workers that hold one copy of a shared state), ``executor`` (RayExecutor: local Ray, a
cluster address, retries; the ``--workers``/``--address`` flags of a study's command line).
Ray is optional: ``pip install 'agentic_toolkit[cluster]'``.
"""

from .executor import (
    Executor,
    RayExecutor,
    add_executor_arguments,
    executor_from_args,
    resolve_executor,
)
from .pool import worker_pool
from .store import RecordView, ResultStore, Task, estimate, read_records
from .tasks import run_tasks

__all__ = [
    "Executor", "RayExecutor", "RecordView", "ResultStore", "Task", "add_executor_arguments", "estimate",
    "executor_from_args", "read_records", "resolve_executor", "run_tasks", "worker_pool",
]
