"""finetune / evaluate / proxy_accuracy on real CIFAR ResNet-20s and tiny JPEG CIFAR-10 subsets."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from agentic_toolkit import Recipe, cifar10, create_model, evaluate, finetune, proxy_accuracy
from agentic_toolkit.errors import CheckpointError, ToolkitError
from agentic_toolkit.training.finetune import FinetuneResult, NonFiniteLossError, list_checkpoints

ONE_EPOCH = Recipe(epochs=1)


def _resnet20():
    return create_model("cifar_resnet20", pretrained=True)


def _train(limit=64, batch_size=32, **kw):
    return cifar10("train", batch_size=batch_size, limit=limit, **kw)


def _pruned_resnet20(ratio=0.5):
    """Structurally pruned ResNet-20 (torch-pruning, L2 magnitude, all stages)."""
    import torch_pruning as tp

    model = _resnet20()
    pruner = tp.pruner.MetaPruner(
        model, torch.randn(1, 3, 32, 32), importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio, ignored_layers=[model.linear],
        in_channel_groups={}, out_channel_groups={}, num_heads={},  # fresh dicts (tp mutates them)
    )
    pruner.step()
    return model.eval()


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def test_batches():
    return cifar10("test", batch_size=100, limit=400)


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_matches_a_hand_computation(test_batches):
    model = _resnet20()
    model.train()  # evaluate must switch to eval mode and restore this afterwards
    got = evaluate(model, test_batches)
    assert model.training
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for x, y in test_batches:
            logits.append(model(x))
            labels.append(y)
    logits, labels = torch.cat(logits), torch.cat(labels)
    assert got["samples"] == 400
    assert got["top1"] == pytest.approx(100 * (logits.argmax(1) == labels).float().mean().item())
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert got["top5"] == pytest.approx(100 * top5)
    assert got["loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert 70 < got["top1"] <= got["top5"]  # pretrained ResNet-20: ~81% on the JPEG test set
    assert evaluate(model, test_batches, channels_last=True)["top1"] == pytest.approx(got["top1"])


def test_evaluate_rejects_empty_loader_and_bad_labels():
    model = _resnet20()
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ToolkitError, match="no samples"):
        evaluate(model, empty)
    bad = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 10, 2]))]
    with pytest.raises(ToolkitError, match=r"label 10 is outside .*0\.\.9"):
        evaluate(model, bad)


# ----------------------------------------------------------------------------- finetune


def test_finetune_history_schedule_and_plot(test_batches):
    model = _resnet20()
    result = finetune(model, _train(limit=96), test_batches, Recipe(epochs=2, lr=0.02), progress=False)
    assert isinstance(result, FinetuneResult)
    h = result.history
    assert list(h.columns) == ["epoch", "loss", "train_top1", "val_top1", "val_top5", "val_loss", "lr", "seconds"]
    assert h["epoch"].tolist() == [1, 2] and result.epochs == 2
    assert h[["loss", "train_top1", "val_top1", "seconds"]].notna().all().all()
    # cosine per step over 2 x 3 steps: the last step's lr is small, epoch 1's is mid-way
    assert 0 < h["lr"].iloc[1] < 0.1 * 0.02 < h["lr"].iloc[0] < 0.02
    assert result.best_val_top1 == h["val_top1"].max()
    assert result.best_epoch in (1, 2)
    assert result.final_val_top1 == h["val_top1"].iloc[-1]
    assert not model.training  # returned in eval mode
    fig = result.plot()
    assert len(fig.axes) == 2
    assert "epochs" in str(result)


def test_finetune_learns_a_subset():
    """From random weights, 64 images seen 10 times must be fitted (the loop really trains)."""
    torch.manual_seed(0)
    model = create_model("cifar_resnet20")
    res = finetune(model, _train(limit=64, augment=False),
                   recipe=Recipe(epochs=10, lr=0.05, schedule="constant", weight_decay=0.0), progress=False)
    h = res.history
    assert h["loss"].iloc[-1] < 0.4 * h["loss"].iloc[0]
    assert h["train_top1"].iloc[-1] > h["train_top1"].iloc[0] + 40


def test_progress_bars_can_be_silenced(capfd):
    finetune(_resnet20(), _train(limit=32), recipe=ONE_EPOCH, progress=False)
    assert capfd.readouterr().err == ""
    finetune(_resnet20(), _train(limit=32), recipe=ONE_EPOCH, progress=True)
    err = capfd.readouterr().err
    assert "finetune" in err and "epoch 1/1" in err


def test_distillation_from_an_identical_teacher_is_a_fixed_point():
    """kd_alpha=1 with the student's own copy as teacher: KL = 0, so nothing may change;
    kd_alpha=0 must equal training without a teacher."""
    student = _resnet20()
    teacher = copy.deepcopy(student)
    before = _state(student)
    res = finetune(student, _train(limit=64, augment=False),
                   recipe=Recipe(epochs=1, lr=0.05, weight_decay=0.0, kd_alpha=1.0), teacher=teacher,
                   freeze_bn=True, progress=False)
    assert res.history["loss"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    after = _state(student)  # softmax rounding leaves gradients of ~1e-9, not exact zeros
    assert max((before[k].float() - after[k].float()).abs().max().item() for k in before) < 1e-5

    a, b = _resnet20(), _resnet20()
    recipe = Recipe(epochs=1, lr=0.02)
    finetune(a, _train(limit=64), recipe=recipe, progress=False, seed=1)
    finetune(b, _train(limit=64), recipe=recipe.replace(kd_alpha=0.0), progress=False, seed=1,
             teacher=_pruned_resnet20())
    assert _same_state(_state(a), _state(b))


def test_distillation_changes_training():
    recipe = Recipe(epochs=1, lr=0.02)
    a, b = _pruned_resnet20(), _pruned_resnet20()
    finetune(a, _train(limit=64), recipe=recipe, progress=False, seed=1)
    res = finetune(b, _train(limit=64), recipe=recipe.replace(kd_alpha=0.7, kd_temperature=4.0),
                   teacher=_resnet20(), progress=False, seed=1)
    assert not _same_state(_state(a), _state(b))
    assert res.history["loss"].notna().all()


def test_bf16_autocast_and_channels_last_on_cpu():
    model = _resnet20()
    res = finetune(model, _train(limit=32), recipe=ONE_EPOCH, amp="bf16", channels_last=True, progress=False)
    assert res.history["loss"].iloc[0] < 5
    assert next(model.parameters()).dtype == torch.float32
    with pytest.raises(ToolkitError, match="fp16"):
        finetune(_resnet20(), _train(limit=32), recipe=ONE_EPOCH, amp="fp16", progress=False)


# ----------------------------------------------------------------------------- checkpoints


class InterruptingLoader(DataLoader):
    """A DataLoader that raises KeyboardInterrupt at batch ``at_batch`` of epoch ``at_epoch``."""

    def __init__(self, *args, at_epoch=None, at_batch=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.at_epoch, self.at_batch, self.epochs_started = at_epoch, at_batch, 0

    def __iter__(self):
        self.epochs_started += 1
        for i, batch in enumerate(super().__iter__()):
            if self.epochs_started == self.at_epoch and i == self.at_batch:
                raise KeyboardInterrupt
            yield batch


def _interruptible(at_epoch=None):
    base = _train(limit=96)  # fresh data set: its augmentation generator starts from the seed
    return InterruptingLoader(base.dataset, batch_size=32, shuffle=True, collate_fn=base.collate_fn,
                              generator=torch.Generator().manual_seed(0), at_epoch=at_epoch)


def test_interrupted_run_resumes_to_the_same_model(tmp_path, test_batches):
    kw = dict(recipe=Recipe(epochs=3, lr=0.02), progress=False)
    ref_model = _pruned_resnet20()
    ref = finetune(ref_model, _interruptible(), test_batches, checkpoint_dir=tmp_path / "ref", seed=3, **kw)

    model = _pruned_resnet20()
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        finetune(model, _interruptible(at_epoch=2), test_batches, checkpoint_dir=run, seed=3, **kw)
    assert [e for e, _ in list_checkpoints(run)] == [1]
    (run / "epoch_0002.pt.tmp").write_bytes(b"half a checkpoint")  # a crash mid-write
    with pytest.raises(ToolkitError, match="resume=True"):
        finetune(model, _interruptible(), test_batches, checkpoint_dir=run, **kw)

    model = _pruned_resnet20()  # a "new process": the same pruned structure, re-created
    res = finetune(model, _interruptible(), test_batches, checkpoint_dir=run, resume=True, **kw)
    assert res.resumed_from == 1 and res.epochs == 3
    assert [e for e, _ in list_checkpoints(run)] == [1, 2, 3]
    pd.testing.assert_frame_equal(res.history.drop(columns="seconds"), ref.history.drop(columns="seconds"))
    assert _same_state(_state(model), _state(ref_model))  # bit-exact on CPU
    for _, path in list_checkpoints(run):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        assert {"model", "optimizer", "scheduler", "epoch", "rng", "history"} <= set(ckpt)

    # resuming a finished run does nothing; resuming into another structure is refused clearly
    again = finetune(model, _interruptible(), test_batches, checkpoint_dir=run, resume=True, **kw)
    assert again.epochs == 3 and _same_state(_state(model), _state(ref_model))
    with pytest.raises(CheckpointError, match="same"):
        finetune(_resnet20(), _interruptible(), checkpoint_dir=run, resume=True, **kw)
    with pytest.raises(CheckpointError, match="epochs"):
        finetune(_pruned_resnet20(), _interruptible(), checkpoint_dir=run, resume=True,
                 **{**kw, "recipe": Recipe(epochs=4, lr=0.02)})


def test_keep_checkpoints_prunes_old_files(tmp_path):
    finetune(_resnet20(), _train(limit=32), recipe=Recipe(epochs=3), checkpoint_dir=tmp_path,
             keep_checkpoints=1, progress=False)
    assert [e for e, _ in list_checkpoints(tmp_path)] == [3]
    assert not list(tmp_path.glob("*.tmp"))


# ----------------------------------------------------------------------------- bad input


def test_empty_loaders_are_refused_before_training():
    model = _resnet20()
    before = _state(model)
    with pytest.raises(ToolkitError, match="train_loader yields no batches.*drop_last"):
        finetune(model, _train(limit=10, batch_size=32, drop_last=True), recipe=ONE_EPOCH, progress=False)
    empty = DataLoader(TensorDataset(torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(ToolkitError, match="val_loader yields no batches"):
        finetune(model, _train(limit=32), empty, ONE_EPOCH, progress=False)
    assert _same_state(before, _state(model))


def test_label_outside_the_classifier_is_refused():
    images = torch.randn(8, 3, 32, 32)
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 12])
    model = _resnet20()
    before = _state(model)
    with pytest.raises(ToolkitError, match=r"epoch 1, step 1.*label 12 is outside the classifier's range 0\.\.9"):
        finetune(model, DataLoader(TensorDataset(images, labels), batch_size=8), recipe=ONE_EPOCH,
                 progress=False)
    assert _same_state(before, _state(model))
    with pytest.raises(ToolkitError, match="integer class indices"):
        finetune(model, DataLoader(TensorDataset(images, labels.float()), batch_size=8), recipe=ONE_EPOCH,
                 progress=False)


def test_non_finite_loss_names_epoch_and_step():
    images = torch.randn(24, 3, 32, 32)
    images[17] = float("nan")  # batch 3 of epoch 1 (batch size 8, no shuffling)
    loader = DataLoader(TensorDataset(images, torch.randint(0, 10, (24,))), batch_size=8)
    model = _resnet20()
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3 of 3") as info:
        finetune(model, loader, recipe=Recipe(epochs=2), progress=False)
    assert isinstance(info.value, ToolkitError)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # stopped before the update
    # divergence: with fixed BN statistics a far too large learning rate overflows in 2 steps
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2 of 4.*Lower lr"):
        finetune(_resnet20(), _train(limit=64, batch_size=16), recipe=Recipe(epochs=3, lr=1e4), freeze_bn=True,
                 progress=False)


def test_argument_checks():
    with pytest.raises(ToolkitError, match="epochs"):
        finetune(_resnet20(), _train(limit=32), recipe={"epochs": 0})
    with pytest.raises(ToolkitError, match="kd_alpha"):
        finetune(_resnet20(), _train(limit=32), recipe={"epochs": 1, "kd_alpha": 1.5})
    with pytest.raises(ToolkitError, match="checkpoint_dir"):
        finetune(_resnet20(), _train(limit=32), recipe=ONE_EPOCH, resume=True)
    with pytest.raises(ToolkitError, match="optimizer"):
        finetune(_resnet20(), _train(limit=32), recipe=ONE_EPOCH.replace(optimizer="lion"))


# ----------------------------------------------------------------------------- proxy accuracy


def test_proxy_accuracy_recalibrates_bn_on_a_copy():
    loader = cifar10("train", batch_size=100, limit=800, augment=False, shuffle=True)  # seeded
    score = proxy_accuracy(loader, batches=4)
    score_raw = proxy_accuracy(loader, batches=4, bn_recalibration=False)
    assert score.eval_images == 400 and len(score.bn_batches) == 4
    full = _resnet20()
    pruned = _pruned_resnet20(0.2)
    before = _state(pruned)
    raw, recal = score_raw(pruned), score(pruned)
    assert _same_state(before, _state(pruned))  # the model itself was not touched
    assert recal > raw + 15  # stale BN statistics dominate the raw score after pruning
    assert score(pruned) == recal  # same images every call
    assert score(full) > recal  # the unpruned model ranks above its half-width version
    assert raw == pytest.approx(evaluate(pruned, score_raw.eval_batches)["top1"])
    with pytest.raises(ToolkitError, match="yielded only"):
        proxy_accuracy(cifar10("train", batch_size=100, limit=300, augment=False), batches=2)


def test_teacher_stays_prunable_after_distillation():
    """Regression: finetune used to freeze the teacher's parameters, which made the unpruned
    model unprunable afterwards (a second search in the quickstart's budget panel failed)."""
    from agentic_toolkit import Strategy, fit_to_budget

    teacher = _resnet20()
    student = copy.deepcopy(teacher)
    finetune(student, _train(limit=32), recipe=ONE_EPOCH, teacher=teacher, progress=False)
    assert all(p.requires_grad for n, p in teacher.named_parameters() if "shortcut" not in n)
    x = torch.randn(1, 3, 32, 32)
    fit = fit_to_budget(teacher, Strategy(), 0.6 * 40_551_040, x)
    assert fit.prune().macs == fit.predicted_macs


# ----------------------------------------------------------------------------- studies


def test_jsonl_cache_keeps_matching_lines_and_survives_a_cut_line(tmp_path):
    from reproduce.kd import JsonlCache

    path = tmp_path / "cache.jsonl"
    a = JsonlCache(path, {"lr": 0.01})
    assert a.put("x", {"v": (1, 2)}) == {"v": [1, 2]}  # JSON-normalised, as read back later
    JsonlCache(path, {"lr": 0.02}).put("x", {"v": 9})  # other settings: stored, not mixed in
    with open(path, "a") as fh:
        fh.write('{"key": "y", "settin')  # a crash mid-write
    b = JsonlCache(path, {"lr": 0.01})
    assert b.get("x") == {"v": [1, 2]} and b.get("y") is None
    b.put("y", 3)
    assert JsonlCache(path, {"lr": 0.01}).records == {"x": {"v": [1, 2]}, "y": 3}
    assert JsonlCache(path, {"lr": 0.02}).records == {"x": {"v": 9}}
    assert JsonlCache(None, {}).put("k", 1) == 1  # memory only


def test_kd_study_resumes_from_its_cache(tmp_path, capsys):
    from agentic_toolkit import Recipe
    from reproduce.kd import kd_study

    kw = dict(recipe=Recipe.preset("cifar", epochs=1, batch_size=32), train_limit=64, test_limit=100, cache=tmp_path / "c.jsonl",
              progress=False)
    first = kd_study(seeds=(0,), **kw)
    assert "measured" in capsys.readouterr().out
    both = kd_study(seeds=(0, 1), **kw)  # seed 0 comes from the cache, seed 1 is measured
    out = capsys.readouterr().out
    assert out.count("(cached)") == 2 and out.count("(measured)") == 2
    pd.testing.assert_frame_equal(both.frame[both.frame["seed"] == 0].reset_index(drop=True), first.frame)
    r = both.report
    assert 0.48 <= r["mac_fraction"] <= 0.5 and r["seeds"] == [0, 1] and len(r["kd_minus_ce_per_seed"]) == 2
    assert r["strategy"]["global_pruning"] is False and r["strategy"]["importance"] == "magnitude_l2"
    assert "KD - CE per seed" in both.summary()
