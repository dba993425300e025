"""Recipe: presets, validation, conversions; finetune takes a recipe (no field keywords); the CLI."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest
import torch

import agentic_toolkit as at
from agentic_toolkit import Recipe, cifar10, create_model, finetune
from agentic_toolkit.cli import main as cli_main
from agentic_toolkit.cli.finetune import add_arguments, recipe_from_args
from agentic_toolkit.errors import ToolkitError
from agentic_toolkit.training.recipe import FIELDS, PRESETS, resolve_recipe

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- the dataclass


def test_presets():
    cifar = Recipe.preset("cifar")
    assert (cifar.optimizer, cifar.lr, cifar.weight_decay, cifar.batch_size) == ("sgd", 0.01, 5e-4, 128)
    cnn = Recipe.preset("imagenet_cnn")  # the README's statement of the paper's CNN recipe
    assert (cnn.optimizer, cnn.lr, cnn.batch_size, cnn.epochs) == ("sgd", 0.08, 1024, 100)
    assert (cnn.momentum, cnn.weight_decay, cnn.schedule, cnn.warmup_epochs) == (0.9, 1e-4, "cosine", 5.0)
    assert cnn.label_smoothing == 0.1 and cnn.kd_alpha == 0.5
    vit = Recipe.preset("imagenet_vit")  # DeiT: AdamW 5e-4 * batch / 512, wd 0.05
    assert (vit.optimizer, vit.weight_decay, vit.warmup_epochs, vit.label_smoothing) == ("adamw", 0.05, 5.0, 0.1)
    assert vit.lr == pytest.approx(5e-4 * vit.batch_size / 512)
    assert vit.scaled(512).lr == pytest.approx(5e-4) and vit.scaled(512).batch_size == 512
    assert Recipe.preset("cifar", epochs=3, lr=0.02) == cifar.replace(epochs=3, lr=0.02)
    assert set(PRESETS) == {"cifar", "imagenet_cnn", "imagenet_vit"}
    with pytest.raises(ToolkitError, match="unknown recipe preset 'imagenet'.*cifar"):
        Recipe.preset("imagenet")
    assert at.Recipe is Recipe


def test_conversions_and_summary():
    r = Recipe.preset("imagenet_cnn")
    assert Recipe.from_dict(json.loads(r.to_json())) == r
    assert Recipe.from_dict(r.to_dict()) == r
    text = r.summary()
    assert "100 epochs" in text and "sgd lr 0.08 (batch 1024)" in text and "warm-up" in text
    assert str(r).startswith("Recipe(")
    with pytest.raises(ToolkitError, match=r"unknown recipe field\(s\) \['lr_max'\]"):
        Recipe.from_dict({"epochs": 1, "lr_max": 0.1})
    with pytest.raises(ToolkitError, match="needs 'epochs'"):
        Recipe.from_dict({"lr": 0.1})
    with pytest.raises(ToolkitError, match="unknown recipe field"):
        r.replace(learning_rate=0.1)
    with pytest.raises(ToolkitError, match="no reference batch_size"):
        Recipe(epochs=1).scaled(256)
    # numpy scalars in, plain Python numbers out (JSON-ready)
    np = pytest.importorskip("numpy")
    r2 = Recipe(epochs=np.int64(2), lr=np.float32(0.5))
    assert type(r2.epochs) is int and type(r2.lr) is float
    json.dumps(r2.to_dict())


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("epochs", 0, "epochs must be a positive integer"),
        ("epochs", 1.5, "epochs must be a positive integer"),
        ("lr", 0.0, "lr must be > 0"),
        ("lr", float("nan"), "lr must be a finite number"),
        ("lr", "0.1", "lr must be a finite number"),
        ("kd_alpha", 1.5, r"kd_alpha must be in \[0, 1\]"),
        ("kd_temperature", 0, "kd_temperature must be > 0"),
        ("label_smoothing", 1.0, r"label_smoothing must be in \[0, 1\)"),
        ("warmup_epochs", 3, r"warmup_epochs must be in \[0, epochs=2\]"),
        ("optimizer", "lion", "optimizer must be one of"),
        ("schedule", "step", "schedule must be one of"),
        ("weight_decay", -1e-4, "weight_decay must be >= 0"),
        ("momentum", 1.0, r"momentum must be in \[0, 1\)"),
        ("batch_size", 0, "batch_size must be a positive integer or None"),
    ],
)
def test_validation_names_the_field(field, value, message):
    with pytest.raises(ToolkitError, match=message):
        Recipe(**{"epochs": 2, field: value})
    with pytest.raises(ToolkitError, match=message):
        Recipe(epochs=2).replace(**{field: value})


def test_resolve_recipe_takes_a_recipe_a_preset_name_or_a_dict():
    base = Recipe.preset("cifar")
    assert resolve_recipe(base) is base
    assert resolve_recipe("cifar") == base
    assert resolve_recipe({"epochs": 3, "kd_alpha": 0.2}) == Recipe(epochs=3, kd_alpha=0.2)
    with pytest.raises(ToolkitError, match="finetune needs a recipe"):
        resolve_recipe(None)
    with pytest.raises(ToolkitError, match="recipe must be a Recipe"):
        resolve_recipe(3)
    with pytest.raises(ToolkitError, match="unknown recipe field"):
        base.replace(learning_rate=0.1)


def test_finetune_has_no_keyword_that_repeats_a_recipe_field():
    params = inspect.signature(finetune).parameters
    assert "recipe" in params and "teacher" in params
    assert not set(params) & set(FIELDS)


# ----------------------------------------------------------------------------- finetune


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_finetune_with_a_recipe_a_dict_or_a_replaced_preset_is_the_same_run():
    loader = lambda: cifar10("train", batch_size=16, limit=32)  # noqa: E731 (fresh augmentation RNG)
    val = cifar10("test", batch_size=50, limit=50)
    kw = dict(epochs=1, lr=0.02, weight_decay=5e-4, momentum=0.8, schedule="linear", label_smoothing=0.1)
    a, b, c = (create_model("cifar_resnet20", pretrained=True) for _ in range(3))
    ra = finetune(a, loader(), val, Recipe(**kw), progress=False, seed=1)
    rb = finetune(b, loader(), val, kw, progress=False, seed=1)
    # another recipe's fields overridden with replace
    rc = finetune(c, loader(), val, Recipe(**{**kw, "lr": 0.5, "epochs": 3}).replace(epochs=1, lr=0.02),
                  progress=False, seed=1)
    sa = _state(a)
    for model, res in ((b, rb), (c, rc)):
        assert all(torch.equal(sa[k], v) for k, v in _state(model).items())
        assert res.history.drop(columns="seconds").equals(ra.history.drop(columns="seconds"))
        assert res.recipe == ra.recipe == Recipe(**kw)

    # the result surface
    d = ra.to_dict()
    json.dumps(d, allow_nan=False)
    assert d["epochs"] == 1 and d["recipe"]["lr"] == 0.02 and d["history"][0]["epoch"] == 1
    assert d["best_epoch"] == 1 and d["final"]["val_top1"] == ra.final_val_top1
    frame = ra.to_frame()
    assert frame.equals(ra.history) and frame is not ra.history
    text = ra.summary()
    assert "1 epochs" in text and "val top-1" in text and "recipe: 1 epochs, sgd lr 0.02" in text


def test_finetune_without_a_recipe_or_with_bad_fields():
    model = create_model("cifar_resnet20")
    loader = cifar10("train", batch_size=16, limit=16)
    with pytest.raises(ToolkitError, match="finetune needs a recipe"):
        finetune(model, loader)
    with pytest.raises(ToolkitError, match="warmup_epochs"):
        finetune(model, loader, recipe=Recipe.preset("imagenet_cnn").replace(epochs=1), progress=False)
    with pytest.raises(TypeError, match="epochs"):
        finetune(model, loader, recipe="cifar", epochs=1)  # type: ignore[call-arg]
    res = finetune(model, loader, recipe={**PRESETS["cifar"], "epochs": 1}, progress=False)  # a dict
    assert res.recipe == Recipe.preset("cifar", epochs=1)
    json.dumps(res.to_dict(), allow_nan=False)  # no validation: NaN columns become None
    assert res.to_dict()["final"]["val_top1"] is None and res.best_epoch is None


# ----------------------------------------------------------------------------- CLI


def _args(*argv):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p.parse_args(["--data", "cifar10", *argv])


def test_cli_recipe_flags():
    recipe, batch = recipe_from_args(_args())
    assert recipe == Recipe(epochs=1, batch_size=128) and batch == 128  # the old CLI defaults
    recipe, batch = recipe_from_args(_args("--recipe", "imagenet_cnn", "--lr", "0.1", "--kd-alpha", "0.3"))
    assert recipe == Recipe.preset("imagenet_cnn", lr=0.1, kd_alpha=0.3) and batch == 1024
    recipe, batch = recipe_from_args(_args("--recipe", "imagenet_vit", "--batch-size", "256", "--scale-lr"))
    assert batch == 256 and recipe.lr == pytest.approx(2.5e-4) and recipe.batch_size == 256
    recipe, _ = recipe_from_args(_args("--recipe", "imagenet_vit", "--batch-size", "256"))
    assert recipe.lr == pytest.approx(1e-3)  # no scaling unless asked
    with pytest.raises(ToolkitError, match="--scale-lr needs --recipe"):
        recipe_from_args(_args("--scale-lr"))


def test_cli_finetune_help_and_errors(capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["finetune", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--recipe {cifar,imagenet_cnn,imagenet_vit}" in out and "--kd-alpha" in out
    code = cli_main(["finetune", "--model", "cifar_resnet20", "--data", "cifar10", "--recipe", "imagenet_cnn",
                     "--epochs", "2"])
    assert code == 2
    assert "warmup_epochs must be in [0, epochs=2]" in capsys.readouterr().err


def test_cli_finetune_runs(tmp_path, capsys):
    out = tmp_path / "ft"
    code = cli_main(["finetune", "--model", "cifar_resnet20", "--pretrained", "true", "--data", "cifar10",
                     "--limit", "32", "--val-limit", "50", "--batch-size", "16", "--recipe", "cifar",
                     "--epochs", "1", "--no-progress", "--out", str(out)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["global_batch"] == 16
    assert summary["recipe"] == Recipe.preset("cifar", epochs=1, batch_size=16).to_dict()
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "history.csv").is_file() and (out / "model.safetensors").is_file()
