"""Adapt the pretrained CIFAR ResNet-56 to the JPEG CIFAR-10 set (entry point).

The study lives in :mod:`reproduce.adaptation`; it writes
data/cifar_resnet56_adaptation.{csv,json} and data/cifar_resnet56_adapted.safetensors and
resumes from runs/adapt_cifar_resnet56/ when interrupted.

    nice -n 10 .venv/bin/python scripts/adapt_cifar_resnet56.py --threads 1   # one epoch: ~19 min
    .venv/bin/python scripts/adapt_cifar_resnet56.py --smoke                  # data/smoke/
"""

from __future__ import annotations

import sys

from reproduce.adaptation import main

if __name__ == "__main__":
    sys.exit(main())
