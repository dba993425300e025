"""The paper's setting, shared by every study: its four ImageNet models, their baseline
MACs as the paper reports them and its absolute MAC targets (1x3x224x224)."""

from __future__ import annotations

PAPER_MODELS = ("resnet50", "resnet101", "convnext_small", "deit_base_patch16_224")
#: Baseline GMACs per model as the paper reports them.
PAPER_BASELINE_GMACS = {"resnet50": 4.1, "resnet101": 7.8, "convnext_small": 8.7, "deit_base_patch16_224": 17.58}
#: The paper's absolute MAC targets per model.
PAPER_TARGETS = {
    "resnet50": ("1.77G",),
    "resnet101": ("4.22G",),
    "convnext_small": ("8.17G",),
    "deit_base_patch16_224": ("4.16G", "2.61G"),
}
#: Input of every ImageNet study.
IMAGENET_INPUT = (1, 3, 224, 224)


def paper_cases(models=PAPER_MODELS) -> list[tuple[str, str]]:
    """(model, target) pairs for every paper target of ``models``, in model order."""
    return [(m, t) for m in models for t in PAPER_TARGETS.get(m, ())]
