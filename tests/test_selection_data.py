"""No code path scores search candidates on the test split: selection uses the held-out val split."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import torch

import agentic_toolkit.data as data_module
from agentic_toolkit.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_search_cli_scores_candidates_on_val(monkeypatch, capsys, tmp_path):
    real = data_module.cifar10
    splits = []

    def spy(split="train", *args, **kwargs):
        splits.append(split)
        return real(split, *args, **kwargs)

    monkeypatch.setattr(data_module, "cifar10", spy)
    code = main(["search", "cifar_resnet20", "--pretrained", "true", "--target-macs", "20M", "--proxy-batches", "1",
                 "--max-revisions", "2", "--json", "--log", str(tmp_path / "h.jsonl")])
    assert code in (0, 1)
    report = json.loads(capsys.readouterr().out)
    assert report["score"] is not None  # candidates were scored ...
    assert splits == ["val"]            # ... on the held-out val split, never on test


def _calls_with_test_split(source: str) -> list[str]:
    """``proxy_accuracy(...)`` / ``BudgetPanel(...)`` / ``AgenticSearch(...)`` calls whose
    arguments mention a ``"test"`` split or a test loader."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in {"proxy_accuracy", "default_evaluator", "BudgetPanel", "AgenticSearch", "run_agentic_pruning"}:
                text = ast.unparse(node)
                if "'test'" in text or '"test"' in text or "test_loader" in text:
                    found.append(text[:120])
    return found


def test_no_selection_on_test_in_package_or_notebooks():
    sources = {str(p): p.read_text() for p in (ROOT / "agentic_toolkit").rglob("*.py")}
    for nb_path in (ROOT / "notebooks").glob("*.ipynb"):
        cells = json.loads(nb_path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        sources[str(nb_path)] = "\n".join(ln for ln in code.splitlines() if not ln.lstrip().startswith(("%", "!")))
    offending = {path: calls for path, src in sources.items() if (calls := _calls_with_test_split(src))}
    assert offending == {}
    # the detector itself works
    assert _calls_with_test_split('proxy_accuracy(cifar10("test"), batches=2)')


def test_default_evaluator_scores_val_and_refuses_test():
    import pytest

    import agentic_toolkit as at

    ev = at.default_evaluator(eval_images=256, bn_images=128)
    assert ev.eval_images == 256 and len(ev.bn_batches) == 1
    labels = torch.cat([y for _, y in ev.eval_batches])
    assert len(labels.unique()) == 10  # shuffled: every class, not the first class of the sorted split
    from agentic_toolkit.errors import ToolkitError

    with pytest.raises(ToolkitError, match="never on the test split"):
        at.default_evaluator("test")
