"""Zoo coverage on a fast subset of both zoos: profile -> fit to 50% -> prune -> forward ->
save/load round trip without a base model (timm- and torchvision-native models), and the
sweep's subprocess limits, resume and README rendering."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from reproduce import zoo

SUBSET = [
    ("torchvision", "resnet18"),
    ("torchvision", "mobilenet_v3_small"),
    ("torchvision", "swin_t"),  # used to grow to 23 GB while grouping channels
    ("timm", "resnet18"),
    ("timm", "deit_tiny_patch16_224"),
]


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("source,name", SUBSET, ids=[f"{s}:{n}" for s, n in SUBSET])
def test_model_prunes_to_half_and_round_trips(source, name):
    row = zoo.measure(source, name)
    assert row["status"] == "ok", row["reason"]
    assert abs(row["error_pct"]) <= zoo.TOLERANCE_PCT
    assert row["max_abs_diff"] <= zoo.MAX_ABS_DIFF
    assert row["achieved_macs"] == row["predicted_macs"]


def test_sweep_resumes_and_records_kills(tmp_path):
    path = tmp_path / "zoo.csv"
    zoo.append_row(path, {"model": "resnet18", "source": "torchvision", "status": "ok", "family": "resnet"})
    df = zoo.zoo_coverage(path, models=[("torchvision", "resnet18"), ("timm", "resnet18")],
                          memory_mib=64, progress=False)  # 64 MiB: python + torch alone exceed it
    assert list(df["status"]) == ["ok", "killed: memory"]
    assert zoo.done_models(path) == {("torchvision", "resnet18"), ("timm", "resnet18")}
    text = zoo.supported_architectures(df)
    assert "`resnet18`" in text and "timm:resnet18`: killed: memory" in text


def test_model_lists():
    models = zoo.zoo_models()
    assert len({f for f in zoo.TIMM_FAMILIES}) >= 25
    assert ("torchvision", "swin_t") in models and ("timm", "fastvit_t8") in models
    assert zoo.family_of("torchvision", "swin_t") == "swin_transformer"
    assert isinstance(zoo.supported_architectures(pd.DataFrame(columns=zoo.COLUMNS)), str)
