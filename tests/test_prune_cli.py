"""``agentic-toolkit prune``: JSON report, saved model, clear errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from agentic_toolkit import load_pruned
from agentic_toolkit.cli import main


def test_prune_json_and_save(tmp_path, capsys):
    out = tmp_path / "pruned"
    code = main(["prune", "cifar_resnet20", "--target-macs", "20M", "--json", "--out", str(out)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("model", "target_macs", "achieved_macs", "params", "within_tolerance"):
        assert key in report
    assert report["target_macs"] == 20_000_000 and report["within_tolerance"]
    assert report["achieved_macs"] == report["predicted_macs"]
    assert abs(report["error_pct"]) <= 5
    assert load_pruned(out).macs == report["achieved_macs"]


def test_prune_bad_input_exits_2(tmp_path, capsys):
    bad = tmp_path / "s.json"
    bad.write_text(json.dumps({"importance": "taylor", "colour": "red", "max_layer_ratio": 2}))
    assert main(["prune", "cifar_resnet20", "--target-macs", "20M", "--strategy", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'colour'" in err and "max_layer_ratio" in err
    assert main(["prune", "cifar_resnet20", "--target-macs", "5G"]) == 2
    assert "above the model" in capsys.readouterr().err
    assert main(["prune", "cifar_resnet20", "--target-macs", "-3"]) == 2
    assert main(["prune", "cifar_resnet20", "--target-macs", "1M", "--strategy", str(tmp_path / "none")]) == 2
    assert "cannot read the strategy file" in capsys.readouterr().err


def test_prune_with_a_preset_name(capsys):
    code = main(["prune", "cifar_resnet20", "--target-macs", "20M", "--strategy", "uniform_l1", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["strategy"]["importance"] == "magnitude_l1" and not report["strategy"]["global_pruning"]
    assert report["within_tolerance"]
    assert main(["prune", "cifar_resnet20", "--target-macs", "20M", "--strategy", "no_such_preset"]) == 2
    assert "preset name" in capsys.readouterr().err


def test_prune_in_the_torch_pruning_counter(capsys):
    """``--counter torch_pruning``: the band is met in count_ops_and_params' count, and said so."""
    import timm  # noqa: F401  (before torch_pruning's first use: it counts timm attention only then)
    import torch
    import torch_pruning as tp

    from agentic_toolkit import create_model
    from agentic_toolkit.pruning.budget import fit_to_budget
    from agentic_toolkit.pruning.strategy import Strategy

    args = ["prune", "cifar_resnet20", "--target-macs", "20M", "--pretrained", "true", "--json"]
    code = main([*args, "--counter", "torch_pruning"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counter"] == "torch_pruning" and report["within_tolerance"]
    assert report["achieved_macs"] == report["predicted_macs"] and report["counts"]
    assert 19_000_000 <= report["achieved_macs"] <= 20_200_000
    # the same fit in Python, counted by torch-pruning itself
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fit = fit_to_budget(create_model("cifar_resnet20", pretrained=True), Strategy(), "20M", x, counter="torch_pruning")
    ops, _ = tp.utils.count_ops_and_params(fit.prune().model.eval(), x)
    assert int(ops) == report["achieved_macs"]
    with pytest.raises(SystemExit) as exit_info:
        main(["prune", "cifar_resnet20", "--target-macs", "20M", "--counter", "flops"])
    assert exit_info.value.code == 2
