"""The cases of the convergence study (:mod:`.convergence`): its models, their targets and
settings, and the LLM column's subset.

:class:`StudyModel` builds a model of the study (seeded, trained CIFAR weights or random
init) and its example input; :func:`study_targets` gives a model's targets (fractions of the
baseline, then the paper's absolute ones); :func:`study_cases` every case in the order the
study runs them.

Re-exported by :mod:`.convergence` (import from there).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from agentic_toolkit.models import create_model

from .paper import IMAGENET_INPUT, PAPER_MODELS, PAPER_TARGETS

FRACTIONS = (0.3, 0.4, 0.5, 0.6, 0.7)
CIFAR_INPUT = (1, 3, 32, 32)
#: The backend label of the local-LLM column, and the model behind it.
LLM_BACKEND = "local_llm"
LLM_NAME = "SmolLM2-135M-Instruct (llama-cpp-python server, openai backend)"
#: The LLM column's cases: these models x these fractions, in these settings.
LLM_MODELS = ("cifar_resnet20", "cifar_resnet56")
LLM_FRACTIONS = (0.3, 0.5, 0.7)
LLM_SOLVE_BUDGET = (False,)


@dataclass(frozen=True)
class StudyModel:
    """A model of the study: its name, whether its weights are trained, its input and absolute targets."""

    name: str
    weights: str  # "pretrained" or "random"
    input_size: tuple[int, ...]
    paper_targets: tuple[str, ...] = ()

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        return create_model(self.name, pretrained=self.weights == "pretrained").eval()

    def example_input(self) -> torch.Tensor:
        return torch.randn(*self.input_size, generator=torch.Generator().manual_seed(0))


CIFAR_MODELS = tuple(StudyModel(m, "pretrained", CIFAR_INPUT) for m in ("cifar_resnet20", "cifar_resnet56"))
IMAGENET_MODELS = tuple(StudyModel(m, "random", IMAGENET_INPUT, tuple(PAPER_TARGETS.get(m, ()))) for m in PAPER_MODELS)
#: Every model of the full study, in order.
STUDY_MODELS = CIFAR_MODELS + IMAGENET_MODELS
#: The model of the smoke study.
SMOKE_MODELS = ("cifar_resnet20",)


def study_model(spec: str | StudyModel) -> StudyModel:
    """A :class:`StudyModel` for a name (one of :data:`STUDY_MODELS`, else random init at 224x224)."""
    if isinstance(spec, StudyModel):
        return spec
    known = {m.name: m for m in STUDY_MODELS}
    if spec in known:
        return known[spec]
    cifar = spec.startswith("cifar_")
    return StudyModel(spec, "pretrained" if cifar else "random", CIFAR_INPUT if cifar else IMAGENET_INPUT,
                      tuple(PAPER_TARGETS.get(spec, ())))


def study_targets(model: str | StudyModel, fractions: Sequence[float] = FRACTIONS,
                  smoke: bool = False) -> list[tuple[str, float | str]]:
    """(label, target) pairs: fractions of the baseline, then the paper's absolute targets
    (smoke: the middle and the last one)."""
    m = study_model(model)
    targets: list[tuple[str, float | str]] = [(f"{round(f * 100)}%", float(f)) for f in fractions]
    targets += [(t, t) for t in m.paper_targets]
    return [targets[len(targets) // 2], targets[-1]] if smoke and len(targets) > 2 else targets


def study_cases(
    models: Iterable[str | StudyModel] | None = None,
    backends: Sequence[str] = ("grid", "analyst"),
    *,
    fractions: Sequence[float] = FRACTIONS,
    solve_budget_modes: Sequence[bool] = (False, True),
    llm: bool = False,
    llm_models: Sequence[str] = LLM_MODELS,
    llm_fractions: Sequence[float] = LLM_FRACTIONS,
    llm_solve_budget_modes: Sequence[bool] = LLM_SOLVE_BUDGET,
    smoke: bool = False,
) -> list[dict]:
    """Every case of the study, in the order it runs: the planner backends on every model x
    target x setting first, then (``llm``) the LLM column on ``llm_models`` x ``llm_fractions``
    (smoke: one case). Each case is a dict with the :data:`CASE_KEY` fields, ``spec`` (the
    target as given) and ``study_model``."""
    ms = [study_model(m) for m in (models if models is not None else (SMOKE_MODELS if smoke else STUDY_MODELS))]
    cases = []
    for m in ms:
        for label, target in study_targets(m, fractions, smoke):
            for sb in solve_budget_modes:
                for backend in backends:
                    cases.append({"model": m.name, "weights": m.weights, "target": label, "spec": target,
                                  "backend": backend, "solve_budget": bool(sb), "study_model": m})
    if llm:
        llm_cases = []
        for m in ms:
            if m.name not in llm_models:
                continue
            for label, target in study_targets(m, llm_fractions):
                if isinstance(target, str):
                    continue
                for sb in llm_solve_budget_modes:
                    llm_cases.append({"model": m.name, "weights": m.weights, "target": label, "spec": target,
                                      "backend": LLM_BACKEND, "solve_budget": bool(sb), "study_model": m})
        cases += llm_cases[len(llm_cases) // 2: len(llm_cases) // 2 + 1] if smoke else llm_cases
    return cases


__all__ = [
    "CIFAR_INPUT",
    "CIFAR_MODELS",
    "FRACTIONS",
    "IMAGENET_MODELS",
    "LLM_BACKEND",
    "LLM_FRACTIONS",
    "LLM_MODELS",
    "LLM_NAME",
    "LLM_SOLVE_BUDGET",
    "SMOKE_MODELS",
    "STUDY_MODELS",
    "StudyModel",
    "study_cases",
    "study_model",
    "study_targets",
]
