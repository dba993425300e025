"""A small, deterministic agentic search used by test_master (in-process and as a subprocess).

``python search_job.py LOG MARKER``: runs the search, and on the evaluator's second call
touches MARKER and sleeps, so that the parent can SIGKILL it between revisions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from agentic_toolkit.agents.master import run_agentic_pruning
from agentic_toolkit.models import create_model
from agentic_toolkit.training.evaluation import proxy_accuracy

TARGET_FRACTION = 0.5


def setup():
    from agentic_toolkit.data import cifar10

    torch.manual_seed(0)
    model = create_model("cifar_resnet20", pretrained=True)
    x = torch.zeros(1, 3, 32, 32)
    evaluator = proxy_accuracy(cifar10("test", batch_size=128, shuffle=True, seed=0), batches=1)
    return model, x, evaluator


def search(model, x, evaluator, log, resume=False, plan=None):
    from agentic_toolkit.profiling.profile import profile_macs

    target = int(TARGET_FRACTION * profile_macs(model, example_inputs=x).total_macs)
    return run_agentic_pruning(
        model, target, x, evaluator=evaluator, max_revisions=4, patience=2, log_path=log,
        resume=resume, progress=False, plan=plan,
    )


if __name__ == "__main__":
    log, marker = Path(sys.argv[1]), Path(sys.argv[2])
    model, x, evaluator = setup()

    def stalling(m):
        if evaluator.calls == 1:  # second candidate: signal the parent, then wait to be killed
            marker.touch()
            time.sleep(600)
        return evaluator(m)

    search(model, x, stalling, log)
