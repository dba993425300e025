"""A small, deterministic agentic search used by test_master and test_resume (in-process and as a subprocess).

``python search_job.py LOG MARKER [BACKEND]``: runs the search, and on the evaluator's second
call touches MARKER and sleeps, so that the parent can SIGKILL it between revisions. BACKEND
is ``analyst`` (default) or ``anthropic`` (key and stand-in URL from ``$ANTHROPIC_API_KEY`` and
``$ANTHROPIC_BASE_URL``). The stall is patched into the scoring function, not wrapped around
the evaluator, so the history header names the same evaluator as the parent's resumed search
(a resume checks it).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from agentic_toolkit.agents.master import run_agentic_pruning
from agentic_toolkit.models import create_model
from agentic_toolkit.training.proxy import proxy_accuracy

TARGET_FRACTION = 0.5


def setup():
    from agentic_toolkit.data import cifar10

    torch.manual_seed(0)
    model = create_model("cifar_resnet20", pretrained=True)
    x = torch.zeros(1, 3, 32, 32)
    evaluator = proxy_accuracy(cifar10("test", batch_size=128, shuffle=True, seed=0), batches=1)
    return model, x, evaluator


def make_backend(name: str = "analyst"):
    """The backend by name; ``anthropic`` reads its key and URL from the environment."""
    if name == "anthropic":
        from agentic_toolkit.agents.backends.anthropic_backend import AnthropicBackend

        return AnthropicBackend(timeout=10.0, retries=1, backoff=0.01)
    return name


def search(model, x, evaluator, log, resume=False, plan=None, backend="analyst"):
    from agentic_toolkit.profiling.profile import profile_macs

    target = int(TARGET_FRACTION * profile_macs(model, example_inputs=x).total_macs)
    return run_agentic_pruning(
        model, target, x, evaluator=evaluator, max_revisions=4, patience=2, log_path=log,
        resume=resume, progress=False, plan=plan, backend=make_backend(backend),
        sensitivity=None if backend == "analyst" else False,  # an LLM proposes every revision
    )


def run_and_kill(log: Path, marker: Path, *args: str) -> None:
    """Run this script in a subprocess and SIGKILL it once it reaches its second candidate
    (MARKER exists), i.e. between revisions, as a user killing a notebook kernel would."""
    import os
    import signal
    import subprocess

    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, str(here / "search_job.py"), str(log), str(marker), *args], env=env)
    try:
        deadline = time.time() + 240
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the search subprocess never reached its second candidate"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


if __name__ == "__main__":
    from agentic_toolkit.training import proxy

    log, marker = Path(sys.argv[1]), Path(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "analyst"
    model, x, evaluator = setup()
    measure = proxy.evaluate  # what the proxy scorer calls

    def stalling(*args, **kwargs):
        if evaluator.calls == 2:  # second candidate: signal the parent, then wait to be killed
            marker.touch()
            time.sleep(600)
        return measure(*args, **kwargs)

    proxy.evaluate = stalling
    search(model, x, evaluator, log, backend=backend)
