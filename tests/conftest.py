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


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for tiny models: as fast, and immune to OpenMP spin-waits when other
    jobs share the cores (2 threads made the training tests 5x slower on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def r20(one_thread):
    """A seeded random-init CIFAR ResNet-20, an example input and its pruning plan."""
    from agentic_toolkit import create_model, get_plan

    torch.manual_seed(0)
    model = create_model("cifar_resnet20")
    x = torch.randn(1, 3, 32, 32)
    return model, x, get_plan(model, x)


@pytest.fixture(scope="module")
def r20_calibrated(one_thread):
    """The pretrained CIFAR ResNet-20, an input, two calibration batches and its plan."""
    from agentic_toolkit import calibration_batches, create_model, get_plan

    torch.manual_seed(0)
    model = create_model("cifar_resnet20", pretrained=True)
    x = torch.randn(1, 3, 32, 32)
    calib = calibration_batches("cifar10", n_batches=2, batch_size=64)
    return model, x, calib, get_plan(model, x, calib)
