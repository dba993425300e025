"""The guard on torch-pruning's index-mapping updates is scoped: importing the toolkit or
building a plan leaves torch-pruning's own functions in place, while our graph builds
still survive mappings torch-pruning cannot compute (ShuffleNetV2's channel shuffle)."""

import threading

import pytest
import torch
import torch_pruning as tp
from torch_pruning.dependency import index_mapping as tp_index_mapping

import agentic_toolkit
from agentic_toolkit import create_model
from agentic_toolkit.pruning.groups import build_graph
from agentic_toolkit.pruning.traversal import _GUARDED_UPDATES, guarded_index_mapping


def _is_original(name: str) -> bool:
    fn = getattr(tp_index_mapping, name)
    return (
        not getattr(fn, "_toolkit_guarded", False)
        and fn.__module__ == tp_index_mapping.__name__
        and fn.__name__ == name
    )


def _all_original() -> bool:
    return all(_is_original(name) for name in _GUARDED_UPDATES)


def test_import_and_plan_leave_torch_pruning_untouched():
    assert _all_original()
    model = create_model("cifar_resnet20")
    plan = agentic_toolkit.get_plan(model, torch.randn(1, 3, 32, 32))
    assert plan.groups
    assert _is_original("update_concat_index_mapping")
    assert _all_original()


def test_guard_is_reentrant_and_restored():
    originals = {name: getattr(tp_index_mapping, name) for name in _GUARDED_UPDATES}
    with guarded_index_mapping():
        assert all(getattr(getattr(tp_index_mapping, n), "_toolkit_guarded", False) for n in _GUARDED_UPDATES)
        with guarded_index_mapping():
            assert getattr(tp_index_mapping.update_split_index_mapping, "_toolkit_guarded", False)
        assert getattr(tp_index_mapping.update_split_index_mapping, "_toolkit_guarded", False)
        # another thread entering and leaving must not remove this thread's guard
        def enter_exit():
            with guarded_index_mapping():
                pass

        worker = threading.Thread(target=enter_exit)
        worker.start()
        worker.join()
        assert getattr(tp_index_mapping.update_concat_index_mapping, "_toolkit_guarded", False)
    assert {name: getattr(tp_index_mapping, name) for name in _GUARDED_UPDATES} == originals


def test_guard_restores_after_error():
    with pytest.raises(RuntimeError), guarded_index_mapping():
        raise RuntimeError("boom")
    assert _all_original()


@pytest.fixture(scope="module")
def shufflenet():
    torchvision = pytest.importorskip("torchvision")
    return torchvision.models.shufflenet_v2_x0_5(weights=None).eval()


def test_unguarded_torch_pruning_fails_on_shufflenet(shufflenet):
    """Why the guard exists: torch-pruning alone raises on ShuffleNetV2's channel shuffle."""
    with pytest.raises(Exception):  # noqa: B017 - whichever error torch-pruning raises
        tp.DependencyGraph().build_dependency(shufflenet, example_inputs=torch.randn(1, 3, 224, 224))
    assert _all_original()


def test_shufflenet_builds_a_plan_with_the_guard_inside(shufflenet):
    graph = build_graph(shufflenet, torch.randn(1, 3, 224, 224))
    assert graph._toolkit_unmapped  # the guarded updates ran during the build
    assert _all_original()
    plan = agentic_toolkit.get_plan(shufflenet, torch.randn(1, 3, 224, 224))
    assert plan.groups
    assert _all_original()
