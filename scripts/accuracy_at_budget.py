"""Accuracy at equal MACs and proxy fidelity on the adapted CIFAR ResNet-56 (see
``reproduce.at_budget_run``)."""

import sys

from reproduce.at_budget_run import main

if __name__ == "__main__":
    sys.exit(main())
