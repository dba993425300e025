"""Zoo coverage: every torchvision classifier and one model per timm family, end to end.

Each model runs in its own subprocess (:func:`run_model`, with a wall-time and a resident
memory limit: the parent polls the child's RSS and kills it on excess) through

    build (random init) -> profile_macs -> fit_to_budget(50%) -> prune -> forward
    -> save_pruned -> load_pruned (no base model passed) -> same outputs (max |diff| <= 1e-5)

and :func:`zoo_coverage` appends one CSV row per model as soon as it finishes, so an
interrupted sweep resumes where it stopped (finished rows are skipped). A row's status is
``ok``, ``unsupported`` (a :class:`~agentic_toolkit.errors.ToolkitError` says what is not
supported), ``off-target`` (pruned MACs more than 0.5% from the target), ``mismatch``
(round trip changed the outputs), ``failed`` (any other error), or ``killed: memory`` /
``killed: time``. Every row also says where it ran (:data:`.machine.MACHINE_COLUMNS`).
:func:`supported_architectures` renders the README's list from the ok rows.

The model is pruned in place (``fit.prune(inplace=True)``) and freed before loading, so the
peak is one model plus its pruned copy's transient, not three models.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from agentic_toolkit.tables import MACHINE_COLUMNS, machine_info

#: One small model per timm family, the families the README promises first.
TIMM_FAMILIES: dict[str, str] = {
    "ResNet": "resnet18", "ResNeXt": "resnext26ts", "RegNet": "regnetx_002", "EfficientNet": "efficientnet_b0",
    "MobileNetV2": "mobilenetv2_035", "MobileNetV3": "mobilenetv3_small_050", "MobileNetV4": "mobilenetv4_conv_small",
    "ConvNeXt": "convnext_atto", "ViT": "vit_tiny_patch16_224", "DeiT": "deit_tiny_patch16_224",
    "BEiT": "beit_base_patch16_224", "Swin": "swin_tiny_patch4_window7_224", "SwinV2": "swinv2_tiny_window8_256",
    "LeViT": "levit_128s", "MobileViT": "mobilevit_xxs", "GhostNet": "ghostnet_050", "DenseNet": "densenet121",
    "ConvMixer": "convmixer_1024_20_ks9_p14", "PoolFormer": "poolformer_s12", "PVTv2": "pvt_v2_b0",
    "CaiT": "cait_xxs24_224", "EVA": "eva02_tiny_patch14_224", "EfficientFormer": "efficientformer_l1",
    "FastViT": "fastvit_t8",
    # further families
    "MaxViT": "maxvit_nano_rw_256", "CoAtNet": "coatnet_nano_rw_224", "EdgeNeXt": "edgenext_xx_small",
    "RepVGG": "repvgg_a0", "DLA": "dla34", "HRNet": "hrnet_w18_small", "InceptionV3": "inception_v3",
    "MNASNet": "mnasnet_small", "ReXNet": "rexnet_100", "TinyViT": "tiny_vit_5m_224", "XCiT": "xcit_nano_12_p16_224",
    "MLP-Mixer": "mixer_s16_224", "ResMLP": "resmlp_12_224", "ConvNeXtV2": "convnextv2_atto",
    "Twins": "twins_pcpvt_small", "NFNet": "nf_resnet26", "CSPNet": "cspresnet50", "ResNeSt": "resnest14d",
    "SKNet": "skresnet18", "Res2Net": "res2net50_14w_8s", "VoVNet": "ese_vovnet19b_dw", "LCNet": "lcnet_050",
    "RepViT": "repvit_m1", "HGNetV2": "hgnetv2_b0", "EfficientViT-MIT": "efficientvit_b0",
    "EfficientViT-MSRA": "efficientvit_m0", "InceptionNeXt": "inception_next_tiny", "MambaOut": "mambaout_femto",
    "Hiera": "hiera_tiny_224", "FocalNet": "focalnet_tiny_srf", "GCViT": "gcvit_xxtiny", "PiT": "pit_ti_224",
    "ConViT": "convit_tiny", "DaViT": "davit_tiny", "StarNet": "starnet_s050", "CrossViT": "crossvit_tiny_240",
    "VOLO": "volo_d1_224", "CoaT": "coat_lite_tiny", "Visformer": "visformer_tiny", "SEResNet": "seresnet18",
    "FBNet": "fbnetc_100", "VGG": "vgg11", "DPN": "dpn48b", "Xception": "xception41", "GhostNetV2": "ghostnetv2_100",
    "MobileOne": "mobileone_s0", "EfficientFormerV2": "efficientformerv2_s0", "SHViT": "shvit_s1",
    "FasterNet": "fasternet_t0",
}
REQUIRED_FAMILIES = 24  # the first entries above
SMOKE = [("torchvision", "resnet18"), ("timm", "mobilenetv3_small_050"), ("torchvision", "swin_t")]
COLUMNS = ["model", "source", "family", "status", "base_macs", "target_macs", "achieved_macs", "predicted_macs",
           "error_pct", "max_abs_diff", "input", "seconds", "peak_rss_mib", "reason"]
MEMORY_LIMIT_MIB = 4096
TIME_LIMIT_S = 900
TOLERANCE_PCT = 0.5
MAX_ABS_DIFF = 1e-5
RELAXED_MAX_LAYER_RATIO = 0.97  # second try where the default cap cannot reach 50%


def torchvision_models() -> list[tuple[str, str]]:
    """``("torchvision", name)`` for every classification builder of torchvision."""
    import torchvision

    return [("torchvision", n) for n in torchvision.models.list_models(module=torchvision.models)]


def zoo_models(smoke: bool = False) -> list[tuple[str, str]]:
    """The sweep's models: the promised timm families, every torchvision classifier, then
    the further timm families (``smoke``: three fast ones)."""
    if smoke:
        return list(SMOKE)
    timm_models = [("timm", n) for n in TIMM_FAMILIES.values()]
    return timm_models[:REQUIRED_FAMILIES] + torchvision_models() + timm_models[REQUIRED_FAMILIES:]


def family_of(source: str, name: str) -> str:
    if source == "timm":
        return next((f for f, n in TIMM_FAMILIES.items() if n == name), name)
    import torchvision

    return torchvision.models.get_model_builder(name).__module__.rpartition(".")[2]


def done_models(path: Path) -> set[tuple[str, str]]:
    """``(source, model)`` of the rows already in ``path`` (a sweep resumes after them)."""
    if not path.is_file():
        return set()
    with path.open(newline="") as f:
        return {(r["source"], r["model"]) for r in csv.DictReader(f)}


def append_row(path: Path, row: dict) -> None:
    """Append one row (header first in a new file, else the file's own columns); flushed
    at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.is_file() or path.stat().st_size == 0
    columns = COLUMNS + list(MACHINE_COLUMNS)
    if not new:
        with path.open(newline="") as f:
            columns = next(csv.reader(f), columns)
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        if new:
            w.writeheader()
        w.writerow({k: row.get(k, "") for k in columns})


def run_model(source: str, name: str, memory_mib: int = MEMORY_LIMIT_MIB, time_s: float = TIME_LIMIT_S) -> dict:
    """One model's row, measured in a subprocess (see module docstring)."""
    import psutil

    # glibc keeps freed blocks below its (dynamic, up to 32 MB) mmap threshold in the heap:
    # a fixed 1 MiB threshold returns freed weight-sized temporaries to the system at once
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", MALLOC_MMAP_THRESHOLD_="1048576")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reproduce.zoo", source, name],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    peak, killed = 0, ""
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.Error:
            pass
        if peak > memory_mib * 2**20:
            killed = "killed: memory"
        elif time.perf_counter() - start > time_s:
            killed = "killed: time"
        if killed:
            proc.kill()
            break
        time.sleep(0.1)
    out, err = proc.communicate()
    row = {"model": name, "source": source, "family": family_of(source, name),
           "seconds": round(time.perf_counter() - start, 1), "peak_rss_mib": round(peak / 2**20)}
    if killed:
        limit = f"{memory_mib} MiB" if killed.endswith("memory") else f"{time_s:.0f} s"
        return {**row, "status": killed, "reason": f"over {limit}"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (err.strip().splitlines() or ["no output"])[-1][:300]
        return {**row, "status": "failed", "reason": f"exit {proc.returncode}: {tail}"}
    child = json.loads(lines[-1])
    child["peak_rss_mib"] = max(row["peak_rss_mib"], child.get("peak_rss_mib", 0))
    return {**row, **child, "seconds": row["seconds"]}


def zoo_coverage(
    path: str | Path, models: Iterable[tuple[str, str]] | None = None, smoke: bool = False,
    memory_mib: int = MEMORY_LIMIT_MIB, time_s: float = TIME_LIMIT_S, progress: bool = True,
) -> pd.DataFrame:
    """Run every model not yet in the CSV ``path`` and append its row; the whole table."""
    path = Path(path)
    done = done_models(path)
    machine = machine_info(threads=1)  # each child runs on one torch thread
    for source, name in models if models is not None else zoo_models(smoke):
        if (source, name) in done:
            continue
        row = run_model(source, name, memory_mib, time_s)
        append_row(path, {**row, **machine})
        done.add((source, name))
        if progress:
            print(f"{source}:{name}: {row['status']} {row.get('error_pct', '')} {row['seconds']} s "
                  f"{row['peak_rss_mib']} MiB {row.get('reason', '')}"[:240], flush=True)
    return pd.read_csv(path)


def supported_architectures(df: pd.DataFrame) -> str:
    """The README's list of supported architectures (markdown) from a coverage table: the
    ok models by source and family, then what is not supported and why."""
    lines = []
    ok = df[df["status"] == "ok"]
    for source, part in ok.groupby("source", sort=True):
        fams = part.groupby("family", sort=False)["model"].apply(lambda s: ", ".join(f"`{m}`" for m in s))
        lines.append(f"- **{source}** ({len(part)} models): "
                     + "; ".join(f"{fam}: {models}" for fam, models in sorted(fams.items(), key=lambda kv: kv[0].lower())))
    rest = df[df["status"] != "ok"]
    if len(rest):
        lines.append("")
        lines.append(f"Not supported ({len(rest)} of {len(df)}):")
        for r in rest.itertuples():
            lines.append(f"- `{r.source}:{r.model}`: {r.status}: {str(r.reason)[:200]}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the child process
def build_model(source: str, name: str):
    """The model (random init, seed 0, eval mode) and its example input (its default size)."""
    import torch

    torch.manual_seed(0)
    if source == "torchvision":
        import torchvision

        model, side = torchvision.models.get_model(name, weights=None), 224
        shape = (1, 3, side, side)
    else:
        import timm

        model = timm.create_model(name, pretrained=False)
        if getattr(model, "num_classes", 1000) == 0:  # a feature extractor (e.g. MIM-pretrained EVA-02)
            model = timm.create_model(name, pretrained=False, num_classes=1000)
        shape = (1, *model.pretrained_cfg.get("input_size", (3, 224, 224)))
    return model.eval(), torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def measure(source: str, name: str) -> dict:
    """One model through the whole path (see module docstring), in this process."""
    import gc
    import tempfile

    import torch

    from agentic_toolkit.errors import ToolkitError
    from agentic_toolkit.profiling import profile_macs
    from agentic_toolkit.pruning import load_pruned, save_pruned

    torch.set_num_threads(1)
    row: dict = {}
    try:
        model, x = build_model(source, name)
        row["input"] = "x".join(map(str, x.shape))
        base = int(profile_macs(model, example_inputs=x).total_macs)
        row.update(base_macs=base, target_macs=base // 2)
        fit, note = _fit(model, x, base // 2)
        result = fit.prune(inplace=True)
        with torch.no_grad():
            expected = result.model(x)
        row.update(achieved_macs=int(result.macs), predicted_macs=int(fit.predicted_macs),
                   error_pct=round(100 * (result.macs - base // 2) / (base // 2), 4))
        with tempfile.TemporaryDirectory() as tmp:
            save_pruned(tmp, result)
            del model, result, fit
            gc.collect()
            loaded = load_pruned(tmp)
            with torch.no_grad():
                diff = float((loaded.model(x) - expected).abs().max())
        row["max_abs_diff"] = diff
        if diff > MAX_ABS_DIFF:
            row.update(status="mismatch", reason=f"round trip changed the outputs by {diff:.3g}")
        elif abs(row["error_pct"]) > TOLERANCE_PCT:
            row.update(status="off-target", reason=f"{row['error_pct']:+.3f}% from the target: the nearest "
                       "width step of the strategy (too few channels for a finer one)")
        else:
            row.update(status="ok", reason=note)
    except ToolkitError as exc:
        row.update(status="unsupported", reason=f"{type(exc).__name__}: {_first_line(exc)}")
    except Exception as exc:  # noqa: BLE001 - every other failure is a row too
        row.update(status="failed", reason=f"{type(exc).__name__}: {_first_line(exc)}")
    row["peak_rss_mib"] = _max_rss_mib()
    return row


def _fit(model, x, target: int):
    """The default strategy's fit; where its layer cap (``max_layer_ratio=0.9``) cannot
    reach the target, the same strategy with a looser cap (said in the row's reason)."""
    from agentic_toolkit.pruning import BudgetInfeasibleError, PrunePlan, Strategy, fit_to_budget

    plan = PrunePlan.build(model, x)
    try:
        return fit_to_budget(model, Strategy(), target, x, plan=plan), ""
    except BudgetInfeasibleError:
        relaxed = Strategy(max_layer_ratio=RELAXED_MAX_LAYER_RATIO)
        fit = fit_to_budget(model, relaxed, target, x, plan=plan)
        return fit, f"needed max_layer_ratio={RELAXED_MAX_LAYER_RATIO}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _max_rss_mib() -> int:
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    print(json.dumps(measure(sys.argv[1], sys.argv[2])), flush=True)
