"""The README and docs/: a short README whose every number is backed by a committed table, a
generated zoo page that matches its CSV, no broken relative link, and a runnable example for every
public name (``make test`` runs them with ``--doctest-modules``). Text only, no model runs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250
PARETO_MARKERS = ("<!-- search-pareto:start -->", "<!-- search-pareto:end -->")

#: Numbers a README may state without a table behind them, each with its reason.
STRUCTURAL_NUMBERS = {
    "2026": "the year of the AgenticPruner paper",
    "3.10": "the minimum Python version",
}
#: A number as written in prose: digits with optional thousands separators and decimals, not the
#: tail of an identifier (``resnet56``) or of another number.
NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")


def _prose(text: str) -> str:
    """``text`` without what is not a claim: fenced code, the generated search-pareto block,
    HTML comments, inline code (names, paths, commands) and link targets."""
    start, end = PARETO_MARKERS
    text = re.sub(re.escape(start) + r".*?" + re.escape(end), "", text, flags=re.S)
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def _normalise(number: str) -> str:
    """``1,024`` -> ``1024``; ``50.0`` -> ``50``; ``3.10`` -> ``3.1``."""
    number = number.replace(",", "")
    return number.rstrip("0").rstrip(".") if "." in number else number


def _data_text() -> str:
    files = sorted(p for p in (ROOT / "data").rglob("*")
                   if p.suffix in (".csv", ".json") and "smoke" not in p.relative_to(ROOT / "data").parts)
    assert files, "data/ holds the committed tables"
    return "\n".join(p.read_text(errors="replace") for p in files)


def _backed(number: str, data: str) -> bool:
    """``number`` starts a number in ``data``: an integer must end there (``50`` is not ``500``),
    a decimal may go on (``89.67`` is ``89.6712`` rounded in the prose)."""
    pattern = r"(?<![\d.])" + re.escape(number) + ("" if "." in number else r"(?!\d)")
    return re.search(pattern, data) is not None


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}); move detail to docs/"


def test_readme_keeps_the_generated_headline_block():
    text = README.read_text()
    start, end = PARETO_MARKERS
    assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end)
    assert "accuracy-at-budget:start" not in text  # that block lives in docs/results.md


def test_extraction_skips_code_and_generated_text():
    text = ("ResNet-56 at 89.67% on 1,024 images.\n```\nx = 123\n```\n`cifar_resnet56` 7 "
            "<!-- search-pareto:start -->\n| 99.99 |\n<!-- search-pareto:end -->\n[a](docs/x2.md)")
    assert [_normalise(m) for m in NUMBER.findall(_prose(text))] == ["56", "89.67", "1024", "7"]
    assert _normalise("50.0") == "50" and _normalise("3.10") == "3.1"
    assert _backed("89.67", "a,89.6712,b") and not _backed("50", "500") and not _backed("9.67", "89.67")


def test_every_readme_number_is_backed_by_a_committed_table():
    data = _data_text()
    found = NUMBER.findall(_prose(README.read_text()))
    assert found, "the README states some numbers"
    missing = sorted({n for n in found if n not in STRUCTURAL_NUMBERS and not _backed(_normalise(n), data)})
    assert missing == [], (f"README numbers found in no table under data/: {missing}; "
                           "move the claim to docs/ or add the table that backs it")


def _make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "scripts" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_zoo_page_is_generated_from_the_committed_csv():
    make_docs = _make_docs()
    text = make_docs.render_zoo(ROOT / "data" / "zoo_coverage.csv")
    assert (DOCS / "zoo.md").read_text() == text, "docs/zoo.md is stale: run python scripts/make_docs.py"
    assert text == make_docs.render_zoo(ROOT / "data" / "zoo_coverage.csv")  # deterministic
    rows = make_docs.read_rows(ROOT / "data" / "zoo_coverage.csv")
    assert all(f"`{r['model']}`" in text for r in rows)
    assert f"of {len(rows)} models are ok" in text


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    heading = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", heading).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {_slug(m) for m in re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)}


MARKDOWN = [README, *sorted(DOCS.glob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)}: broken links {broken}"


def test_docs_index_links_every_page():
    index = (DOCS / "README.md").read_text()
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "README.md")
    assert pages and [p for p in pages if f"]({p})" not in index] == []


def test_every_public_name_has_a_runnable_example():
    import inspect

    import agentic_toolkit as at

    missing = []
    for name in at.__all__:
        if name == "__version__":
            continue
        doc = inspect.getdoc(getattr(at, name)) or ""
        example = doc.partition("Example:")[2]
        if ">>>" not in example:
            missing.append(name)
    assert missing == [], f"no 'Example:' with a '>>>' line in the docstring of {missing}"
