"""Shared fixtures: keep tests offline and fast."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.manual_seed(0)


@pytest.fixture(scope="session")
def cifar_test_loader():
    """The full JPEG CIFAR-10 test set (decoded once into the cache)."""
    from agentic_toolkit.data import cifar10

    return cifar10("test", batch_size=500)
