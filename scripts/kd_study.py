"""Does distillation from the unpruned model help a pruned CIFAR ResNet-56 recover? (entry point)

The study lives in :mod:`reproduce.kd` (prune to ~50% MACs with fit_to_budget and
a uniform L2 strategy, fine-tune with and without KD per seed, JSONL cache for resuming).

    nice -n 10 .venv/bin/python scripts/kd_study.py --threads 1   # full: data/kd_study.{csv,json}
    .venv/bin/python scripts/kd_study.py --smoke                  # data/smoke/
"""

from __future__ import annotations

import sys

from reproduce.kd import main

if __name__ == "__main__":
    sys.exit(main())
