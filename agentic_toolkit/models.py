"""Model zoo: any timm model by name, plus CIFAR-10 ResNets that load the offline weights.

The CIFAR ResNets are the "option A" networks of He et al. (2016) as trained by
Y. Idelbayev. Their down-sampling shortcut is parameter-free (stride-2 subsampling then
zero-padding of channels), a functional op that torch-pruning's dependency graph cannot
map channel-for-channel. We express it as an exactly equivalent fixed 1x1 stride-2
convolution (:class:`PadShortcut`) so that pruning sees ordinary conv channels.
"""

from __future__ import annotations

import contextlib
import difflib
import glob
import re
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import CheckpointError, DataNotFoundError, UnknownModelError
from .hashing import verify_sha256
from .paths import DATA_ENV, data_roots

CIFAR_DEPTHS = {"cifar_resnet20": 3, "cifar_resnet32": 5, "cifar_resnet44": 7, "cifar_resnet56": 9}
CIFAR_MEAN = (0.485, 0.456, 0.406)
CIFAR_STD = (0.229, 0.224, 0.225)


class PadShortcut(nn.Conv2d):
    """Option-A shortcut as a frozen 1x1 stride-2 conv: input channel i -> output i + pad.

    The weight is a 0/1 embedding, so the output equals ``F.pad(x[:, :, ::2, ::2], ...)``
    exactly. It is detached in ``forward`` so that training never changes it, also after
    torch-pruning replaces the parameter with a fresh (trainable) slice.
    """

    def __init__(self, in_planes: int, planes: int):
        super().__init__(in_planes, planes, kernel_size=1, stride=2, bias=False)
        pad = (planes - in_planes) // 2
        weight = torch.zeros(planes, in_planes, 1, 1)
        for i in range(in_planes):
            weight[i + pad, i, 0, 0] = 1.0
        self.weight = nn.Parameter(weight, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight.detach(), None, self.stride)


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn (+ shortcut) - relu."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR-10 ResNet-(6n+2) with widths 16/32/64 and a 64->num_classes linear head."""

    def __init__(self, blocks_per_stage: int, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        stages = []
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for b in range(blocks_per_stage):
                blocks.append(BasicBlock(in_planes, planes, stride if b == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        self.num_classes = num_classes
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and not isinstance(m, PadShortcut):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def list_models(pattern: str = "*") -> list[str]:
    """Names ``create_model`` accepts: the CIFAR ResNets, then timm's.

    Args:
        pattern: an fnmatch pattern the names must match.

    Returns:
        The matching names, the toolkit's CIFAR ResNets first.

    Example:
        >>> import agentic_toolkit as at
        >>> at.list_models("cifar_*")
        ['cifar_resnet20', 'cifar_resnet32', 'cifar_resnet44', 'cifar_resnet56']
        >>> "resnet50" in at.list_models("resnet5*")
        True
    """
    import fnmatch

    import timm

    ours = [n for n in CIFAR_DEPTHS if fnmatch.fnmatch(n, pattern)]
    return ours + list(timm.list_models(pattern))


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, list_models(), n=5, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def find_cifar_checkpoint(name: str, root: str | Path | None = None) -> Path:
    """Locate ``cifar_resnet_weights/resnetNN-<sha>.th`` for a CIFAR ResNet name."""
    stem = name.replace("cifar_", "")
    looked = []
    for base in data_roots(root):
        pattern = str(base / "cifar_resnet_weights" / f"{stem}-*.th")
        looked.append(pattern)
        hits = sorted(glob.glob(pattern))
        if hits:
            return Path(hits[0])
    places = "\n  ".join(looked)
    raise DataNotFoundError(
        f"no pretrained weights for {name}. Looked for:\n  {places}\n"
        f"Fix: pass pretrained=<path to {stem}-*.th>, set {DATA_ENV}, or put the offline "
        "data in ../shared/data."
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a plain state dict (safetensors or torch, never pickle-executing)."""
    if not path.is_file():
        raise DataNotFoundError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt archive, truncated file, pickle payload
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    return {re.sub(r"^module\.", "", k): v for k, v in obj.items()}


def load_checkpoint(model: nn.Module, path: str | Path, allow_missing: tuple[str, ...] = ()) -> None:
    """Load weights from ``path`` into ``model``; a file named ``*-<hex>.*`` is checksum-checked.

    Missing keys matching any pattern in ``allow_missing`` are tolerated; every other
    mismatch raises :class:`CheckpointError` naming the file and the keys.
    """
    path = Path(path)
    m = re.search(r"-([0-9a-f]{8,64})\.[A-Za-z]+$", path.name)
    if m:
        verify_sha256(path, m.group(1))
    state = _read_state_dict(path)
    own = model.state_dict()
    shape_errors = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = [k for k in own if k not in state and not any(re.search(p, k) for p in allow_missing)]
    unexpected = [k for k in state if k not in own]
    if shape_errors or missing or unexpected:
        parts = []
        if shape_errors:
            parts.append("shape mismatches: " + "; ".join(shape_errors[:5]))
        if missing:
            parts.append(f"missing keys ({len(missing)}): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:5])}")
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(model).__name__}: " + " | ".join(parts)
        )
    model.load_state_dict(state, strict=False)


def create_model(
    name: str,
    pretrained: bool | str | Path = False,
    num_classes: int | None = None,
    **kwargs,
) -> nn.Module:
    """Build a model by name: ``cifar_resnet20/32/44/56`` or any timm model.

    Args:
        name: a name :func:`list_models` returns.
        pretrained: ``False``, ``True`` (CIFAR ResNets: the offline weights are found in the
            data roots; timm models: refused, since nothing is downloaded) or a path to a
            local checkpoint (``.safetensors``, ``.pth``/``.th``/``.bin`` state dict).
        num_classes: classifier size; default: the architecture's.
        **kwargs: passed on to ``timm.create_model``.

    Returns:
        The model, in eval mode.

    Raises:
        UnknownModelError: an unknown name (with close matches).

    Example:
        >>> import torch, agentic_toolkit as at
        >>> model = at.create_model("cifar_resnet20")  # random init; pretrained=True loads the offline weights
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> at.create_model("resnet18", num_classes=5).fc.out_features
        5
    """
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
    if name in CIFAR_DEPTHS:
        model: nn.Module = CifarResNet(CIFAR_DEPTHS[name], num_classes or 10)
        if pretrained:
            path = find_cifar_checkpoint(name) if pretrained is True else Path(pretrained)
            if num_classes not in (None, 10):
                raise CheckpointError(
                    f"the pretrained {name} has 10 classes; got num_classes={num_classes}"
                )
            load_checkpoint(model, path, allow_missing=(r"shortcut\.weight$", r"num_batches_tracked$"))
        return _tag(model, name, num_classes, {}).eval()

    import timm

    if not timm.is_model(name):
        raise UnknownModelError(f"unknown model '{name}'.{_suggest(name)}")
    if pretrained is True:
        raise DataNotFoundError(
            f"pretrained=True for timm model '{name}' would download weights, and this toolkit "
            "never downloads at run time. Pass pretrained=<path to a local checkpoint>."
        )
    extra = {"num_classes": num_classes} if num_classes is not None else {}
    model = timm.create_model(name, pretrained=False, **extra, **kwargs)
    if pretrained:
        load_checkpoint(model, Path(pretrained))
    return _tag(model, name, num_classes, kwargs).eval()


def _tag(model: nn.Module, name: str, num_classes: int | None, kwargs: dict) -> nn.Module:
    """Record how to rebuild the (unpruned) architecture, for save/load of pruned models."""
    model.toolkit_spec = {"name": name, "num_classes": num_classes, "kwargs": dict(kwargs)}
    return model


# ---------------------------------------------------------------------------------------
# Rebuilding an architecture: what save_pruned records so load_pruned can build the base
# model again (agentic_toolkit, timm or torchvision), with plain keyword arguments only.

SOURCES = ("agentic_toolkit", "timm", "torchvision")
_PLAIN = (bool, int, float, str, type(None))
_UNSAFE_PREFIXES = ("pretrained", "weights", "checkpoint", "cache", "file", "url", "hf_")
_UNSAFE_KEYS = {"progress", "features_only", "out_indices", "feature_cfg", "model_args"}


def plain_value(value) -> bool:
    """An int, float, bool, string or None, or a tuple/list of those."""
    if isinstance(value, (tuple, list)):
        return all(plain_value(v) for v in value)
    return isinstance(value, _PLAIN)


def as_tuples(value):
    """JSON lists back to tuples (``img_size=[112, 112]`` -> ``(112, 112)``)."""
    return tuple(as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_arch_kwargs(kwargs: dict | None) -> dict:
    """Constructor keyword arguments that are safe to record and pass back: identifiers, no
    weights/checkpoint/download options, values that are plain ints/floats/bools/strings/
    None or tuples of those (nothing that loads a file or runs code). Raises
    :class:`UnknownModelError` naming the offending argument."""
    out = {}
    for key, value in (kwargs or {}).items():
        if not isinstance(key, str) or not key.isidentifier():
            raise UnknownModelError(f"architecture argument {key!r} is not a keyword name")
        if key.startswith(_UNSAFE_PREFIXES) or key in _UNSAFE_KEYS:
            raise UnknownModelError(f"architecture argument '{key}' is not allowed (it loads or selects weights)")
        if not plain_value(value):
            raise UnknownModelError(
                f"architecture argument '{key}' is a {type(value).__name__}; only ints, floats, bools, "
                "strings, None and tuples of those are recorded"
            )
        out[key] = as_tuples(value)
    return out


def _builder(source: str, name: str):
    if source == "timm":
        import timm

        if not timm.is_model(name):
            raise UnknownModelError(f"unknown timm model '{name}'")
        return lambda **kw: timm.create_model(name, pretrained=False, **kw)
    if source == "torchvision":
        import torchvision

        if name not in torchvision.models.list_models(module=torchvision.models):
            raise UnknownModelError(f"'{name}' is not a torchvision classification model")
        builder = torchvision.models.get_model_builder(name)
        return lambda **kw: builder(weights=None, **kw)
    if source == "agentic_toolkit":
        return lambda **kw: create_model(name, **kw)
    raise UnknownModelError(f"unknown model source '{source}'; use one of {', '.join(SOURCES)}")


def accepted_kwargs(source: str, name: str, cls: type) -> set[str]:
    """Keyword arguments the builder and the model class name explicitly (a class whose
    ``__init__`` passes ``**kwargs`` on also accepts its base classes' arguments)."""
    import inspect

    fns = []
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and klass is not nn.Module:
            fns.append(klass.__init__)
            params = inspect.signature(klass.__init__).parameters.values()
            if not any(p.kind == p.VAR_KEYWORD for p in params):
                break
    if source == "torchvision":
        import torchvision

        fns.append(torchvision.models.get_model_builder(name))
    names = set()
    for fn in fns:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
    return names | ({"num_classes"} if source == "agentic_toolkit" else set())


@contextlib.contextmanager
def _parameters_on_meta():
    """Every parameter a module registers moves to the meta device at once (the builder
    still computes on the CPU; memory stays at one layer's weights)."""
    register = nn.Module.register_parameter

    def on_meta(self, name, param):
        if param is not None:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(self, name, param)

    nn.Module.register_parameter = on_meta
    try:
        yield
    finally:
        nn.Module.register_parameter = register


def build_architecture(spec: dict, device: str | None = None) -> nn.Module:
    """Build the unpruned model ``spec`` describes (``{"source", "name", "kwargs"}``, as
    written by ``pruning.persist.architecture_spec``), in eval mode; ``device="meta"`` builds it
    without memory (parameters and buffers on the meta device; for builders that compute
    with tensors, e.g. RegNet's widths, parameters only). Raises :class:`UnknownModelError` for anything unknown or unsafe."""
    source, name = spec.get("source"), spec.get("name")
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"architecture spec without a model name: {spec!r}")
    kwargs = check_arch_kwargs(spec.get("kwargs"))
    build = _builder(source, name)
    try:
        if device != "meta":
            model = build(**kwargs)
        else:
            try:
                with torch.device("meta"):
                    model = build(**kwargs)
            except TypeError:
                raise
            except Exception:  # the builder computes with tensors (e.g. RegNet's widths)
                with _parameters_on_meta():
                    model = build(**kwargs)
    except TypeError as exc:
        raise UnknownModelError(f"{source}:{name} does not accept {sorted(kwargs)}: {exc}") from None
    unknown = set(kwargs) - accepted_kwargs(source, name, type(model))
    if unknown:
        raise UnknownModelError(f"{source}:{name} has no constructor argument {sorted(unknown)}")
    return model.eval()

