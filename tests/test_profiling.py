"""Profiling Agent: profile_macs is exact (vs fvcore and torch-pruning), also after pruning,
never changes the model, and reports bad input and unknown ops clearly."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp
from timm.models.vision_transformer import Attention

from agentic_toolkit import cli
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.models import create_model
from agentic_toolkit.profiling.counter import run_pass
from agentic_toolkit.profiling.profile import LAYER_COLUMNS, MacProfile, profile_macs
from agentic_toolkit.profiling.reference_counters import fvcore_macs

X = torch.randn(1, 3, 224, 224)
FOUR = {  # model -> the paper's baseline MACs
    "resnet50": 4.1e9,
    "resnet101": 7.8e9,
    "convnext_small": 8.7e9,
    "deit_base_patch16_224": 17.58e9,
}
def fvcore_same_ops(model: nn.Module, x: torch.Tensor = X) -> int:
    """fvcore's count of conv, linear and matmul/bmm/einsum, attention un-fused on a copy."""
    return fvcore_macs(model, x)


def rel(a: float, b: float) -> float:
    return abs(a - b) / b


@pytest.fixture(scope="module")
def four_models():
    torch.manual_seed(0)
    return {name: create_model(name) for name in FOUR}


@pytest.mark.parametrize("name", list(FOUR))
def test_four_models_agree_with_fvcore_paper_and_torch_pruning(name, four_models):
    model = four_models[name]
    profile = profile_macs(model)
    fv = fvcore_same_ops(model)
    assert rel(profile.total_macs, fv) < 1e-3, (profile.total_macs, fv)
    assert rel(profile.total_macs, FOUR[name]) < 1e-2, (profile.total_macs, FOUR[name])
    assert profile.params == sum(p.numel() for p in model.parameters())
    assert profile.uncounted_ops == {}

    ops, params = tp.utils.count_ops_and_params(model, X)
    theirs = profile_macs(model, convention="torch_pruning")
    assert rel(theirs.total_macs, ops) < 1e-3, (theirs.total_macs, ops)
    assert theirs.params == params


@pytest.mark.parametrize("name", list(FOUR))
def test_fast_meta_shape_rules_match_torch_meta_kernels(name, four_models):
    # check=True runs the real meta kernel next to every fast rule and compares results
    result = run_pass(four_models[name], X, check=True)
    assert sum(sum(r.macs.values()) for r in result.records) == profile_macs(four_models[name]).total_macs


def _update_timm_attention(model: nn.Module, num_heads: dict) -> None:
    for m in model.modules():
        if isinstance(m, Attention):
            m.num_heads = num_heads[m.qkv]
            m.attn_dim = m.qkv.out_features // 3
            m.head_dim = m.attn_dim // m.num_heads
            m.scale = m.head_dim**-0.5


@pytest.mark.parametrize("prune_heads", [False, True], ids=["head_dims", "num_heads"])
def test_exact_on_deit_with_pruned_attention(prune_heads):
    model = create_model("deit_tiny_patch16_224")
    heads = {m.qkv: m.num_heads for m in model.modules() if isinstance(m, Attention)}
    pruner = tp.pruner.MetaPruner(
        model, X, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
        num_heads=dict(heads), prune_head_dims=not prune_heads, prune_num_heads=prune_heads,
        head_pruning_ratio=0.5, ignored_layers=[model.head] + [b.mlp for b in model.blocks],
    )
    pruner.step()
    _update_timm_attention(model, pruner.num_heads)
    attn = model.blocks[0].attn
    assert attn.attn_dim == attn.proj.in_features == attn.num_heads * attn.head_dim < 192
    assert (attn.num_heads < 3) if prune_heads else (attn.head_dim < 64)  # really pruned

    profile = profile_macs(model)
    fv = fvcore_same_ops(model)
    assert rel(profile.total_macs, fv) < 1e-3, (profile.total_macs, fv)
    row = profile.layers.set_index("name").loc["blocks.0.attn"]
    assert row["op"] == "attention"
    assert row["macs"] == 197 * 197 * attn.attn_dim * 2  # Q.K^T and A.V, pruned attn_dim
    # the torch_pruning convention still reproduces count_ops_and_params, quirks included
    ops, _ = tp.utils.count_ops_and_params(model, X)
    assert rel(profile_macs(model, convention="torch_pruning").total_macs, ops) < 1e-3


def test_exact_on_convnext_with_pruned_channels():
    model = create_model("convnext_atto")
    before = profile_macs(model).total_macs
    pruner = tp.pruner.MetaPruner(
        model, X, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.4,
        ignored_layers=[model.head.fc],
    )
    pruner.step()
    assert model.stages[0].blocks[0].conv_dw.out_channels < 40
    profile = profile_macs(model)
    assert profile.total_macs < 0.7 * before
    fv = fvcore_same_ops(model)
    assert rel(profile.total_macs, fv) < 1e-3, (profile.total_macs, fv)
    ops, _ = tp.utils.count_ops_and_params(model, X)
    assert rel(profile_macs(model, convention="torch_pruning").total_macs, ops) < 1e-3


def _model_state(model: nn.Module) -> dict:
    return {
        "tensors": {k: (v.device, v.clone()) for k, v in model.state_dict(keep_vars=True).items()},
        "grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    }


def _global_hooks() -> tuple[int, int]:
    from torch.nn.modules import module

    return len(module._global_forward_hooks), len(module._global_forward_pre_hooks)


def _assert_unchanged(model: nn.Module, before: dict) -> None:
    after = _model_state(model)
    assert after["grad"] == before["grad"]
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"]
    for k, (device, value) in before["tensors"].items():
        assert after["tensors"][k][0] == device
        assert torch.equal(after["tensors"][k][1], value), k


def test_never_changes_the_model_even_in_train_mode_or_on_error():
    model = create_model("cifar_resnet20").train()
    model.layer1[0].conv1.weight.requires_grad_(False)
    hooks = _global_hooks()
    before = _model_state(model)
    profile = profile_macs(model, input_size=(2, 3, 32, 32))  # BN in train mode: stats untouched
    assert profile.backend == "meta" and profile.total_macs > 0
    with pytest.raises(ToolkitError):
        profile_macs(model, input_size=(2, 5, 32, 32))
    _assert_unchanged(model, before)
    assert _global_hooks() == hooks


def test_batch_scales_macs_but_torch_pruning_reports_per_sample():
    model = create_model("cifar_resnet20")
    one, two = (profile_macs(model, input_size=(b, 3, 32, 32)) for b in (1, 2))
    assert two.total_macs == 2 * one.total_macs
    x2 = torch.randn(2, 3, 32, 32)
    ops, _ = tp.utils.count_ops_and_params(model, x2)
    theirs = profile_macs(model, example_inputs=x2, convention="torch_pruning")
    assert theirs.input_shape == (2, 3, 32, 32)
    assert theirs.total_macs == round(ops)
    per_sample = profile_macs(model, input_size=(1, 3, 32, 32), convention="torch_pruning")
    assert rel(theirs.total_macs, per_sample.total_macs) < 1e-6  # (a Linear bias counts once per batch)


def test_wrong_input_shape_names_model_and_shape():
    model = create_model("resnet18")
    with pytest.raises(ToolkitError) as err:
        profile_macs(model, input_size=(1, 4, 224, 224))
    message = str(err.value)
    assert "resnet18" in message and "(1, 4, 224, 224)" in message and "channels" in message
    with pytest.raises(ToolkitError, match="input_size"):
        profile_macs(model, input_size=(1, 3, -2, 224))
    with pytest.raises(ToolkitError, match="convention"):
        profile_macs(model, convention="flops")


class _TopK(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)

    def forward(self, x):
        y = self.fc(x)
        return torch.topk(y, 4, dim=-1).values.cumsum(-1)


def test_unknown_ops_are_listed_not_dropped():
    profile = profile_macs(_TopK(), input_size=(2, 8))
    assert profile.uncounted_ops["aten.topk"] == 1
    assert profile.total_macs == 2 * 8 * 16
    assert "aten.topk" in profile.summary()


class _FusedAttention(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)


def test_fused_attention_is_counted_on_meta_and_real_kernels():
    model = _FusedAttention()
    expected_attention = 2 * 4 * 10 * 10 * 8 * 2  # batch x heads x L x S x (E + Ev)
    expected = 2 * 10 * 32 * 96 + expected_attention
    for backend in ("meta", "real"):
        result = run_pass(model, torch.randn(2, 10, 32), backend)
        rec = {r.name: r for r in result.records}
        assert rec[""].macs == {"attention": expected_attention}, backend
        assert sum(sum(r.macs.values()) for r in result.records) == expected


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y * 2 if float(y.abs().sum()) > 0 else y  # needs real values


def test_model_needing_real_values_falls_back_to_one_real_pass():
    model = _DataDependent().train()
    before = _model_state(model)
    with pytest.warns(RuntimeWarning, match="meta"):
        profile = profile_macs(model, input_size=(2, 3, 10, 10))
    assert profile.backend == "real"
    assert profile.total_macs == 2 * 8 * 8 * 8 * 27
    _assert_unchanged(model, before)  # BN running stats were written to private clones


def test_layers_table_and_aggregations(four_models):
    deit = profile_macs(four_models["deit_base_patch16_224"])
    layers = deit.layers
    assert set(LAYER_COLUMNS) <= set(layers.columns)
    assert int(layers["macs"].sum()) == deit.total_macs
    attn = layers.set_index("name").loc["blocks.0.attn"]
    assert (attn["type"], attn["op"], attn["macs"]) == ("Attention", "attention", 2 * 12 * 197 * 197 * 64)
    qkv = layers.set_index("name").loc["blocks.0.attn.qkv"]
    assert (qkv["op"], qkv["input_shape"], qkv["output_shape"]) == ("linear", (1, 197, 768), (1, 197, 2304))
    assert int(deit.by_type().set_index("type").loc["Linear", "macs"]) == int(
        layers[layers["type"] == "Linear"]["macs"].sum())
    assert list(deit.by_stage(depth=2)["stage"])[2:14] == [f"blocks.{i}" for i in range(12)]
    assert deit.elementwise_ops > 0

    convnext = profile_macs(four_models["convnext_small"])
    stages = convnext.by_stage()
    assert [s for s in stages["stage"] if s.startswith("stages")] == [f"stages.{i}" for i in range(4)]
    assert int(stages["macs"].sum()) == convnext.total_macs
    resnet = profile_macs(four_models["resnet50"]).by_stage()
    assert list(resnet["stage"]) == ["conv1", "bn1", "act1", "maxpool", "layer1", "layer2",
                                     "layer3", "layer4", "global_pool", "fc"]


def test_summary_and_plot_are_readable(four_models):
    profile = profile_macs(four_models["resnet50"])
    text = profile.summary(max_rows=5)
    assert text.startswith("resnet50: 4.09G MACs")
    assert "layer3" in text and "more layers" in text and len(text.splitlines()) <= 12
    fig = profile.plot()
    axes = fig.get_axes()
    assert [ax.get_xlabel() for ax in axes] == ["MACs (G)", "MACs (G)"]
    assert "resnet50" in fig._suptitle.get_text()
    assert isinstance(profile, MacProfile) and json.dumps(profile.to_dict(layers=True))
    frame = profile.to_frame()
    assert list(frame.columns) == list(LAYER_COLUMNS) and int(frame["macs"].sum()) == profile.total_macs
    frame.loc[:, "macs"] = 0  # a copy: the profile's own table is unchanged
    assert int(profile.layers["macs"].sum()) == profile.total_macs


def test_cli_prints_json_and_rejects_bad_input(capsys):
    assert cli.main(["profile", "cifar_resnet20", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "cifar_resnet20" and out["input_shape"] == [1, 3, 32, 32]
    model = create_model("cifar_resnet20")
    assert out["total_macs"] == profile_macs(model, input_size=(1, 3, 32, 32)).total_macs
    assert out["params"] == sum(p.numel() for p in model.parameters())
    assert cli.main(["profile", "cifar_resnet20", "--input-size", "1,3,x"]) == 2
    assert cli.main(["profile", "cifar_resnet20", "--input-size", "1,1,32,32"]) == 2
    err = capsys.readouterr().err
    assert "cifar_resnet20" in err and "(1, 1, 32, 32)" in err


def test_torch_pruning_convention_does_not_depend_on_import_order(monkeypatch):
    from timm.models import swin_transformer

    model = create_model("deit_tiny_patch16_224")
    ops, _ = tp.utils.count_ops_and_params(model, X)  # timm imported cleanly before tp here
    ours = profile_macs(model, convention="torch_pruning").total_macs
    # the state torch_pruning is left in when `import timm` failed at its own import
    mapping = tp.utils.op_counter.MODULES_MAPPING
    monkeypatch.delitem(mapping, Attention)
    monkeypatch.delitem(mapping, swin_transformer.WindowAttention)
    broken, _ = tp.utils.count_ops_and_params(model, X)
    assert rel(ours, ops) < 1e-3
    assert rel(broken, ops) > 1e-2  # count_ops_and_params silently changed ...
    assert profile_macs(model, convention="torch_pruning").total_macs == ours  # ... ours did not
