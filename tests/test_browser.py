"""Real-browser test of the quickstart notebook: JupyterLab on 127.0.0.1 with a token, driven
through Playwright in Debian's Chromium (no browser download). It runs the notebook, moves the
budget slider, clicks Run and waits for a converged row in the live history table.

The panel's screenshot goes to the git-ignored ``figures/smoke/`` so ``make test`` leaves the
checkout clean; ``UPDATE_FIGURES=1`` writes the committed ``figures/browser_budget_panel.png``.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path(os.environ.get("AGENTIC_TOOLKIT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SCREENSHOT_NAME = "browser_budget_panel.png"


def screenshot_path() -> Path:
    """``figures/`` with ``UPDATE_FIGURES=1`` (refresh the committed image), else ``figures/smoke/``."""
    update = os.environ.get("UPDATE_FIGURES", "0") not in ("", "0")
    folder = ROOT / "figures" / ("" if update else "smoke")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / SCREENSHOT_NAME


pytestmark = pytest.mark.browser


def _chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI; `make test` installs Debian's chromium as root")
    pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """JupyterLab serving a scratch copy of the notebooks (so autosave never touches the repo)."""
    _chromium_or_skip()
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "00_quickstart.ipynb", tmp_path / "notebooks")
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ, SMOKE="1", JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    env.pop("MPLBACKEND", None)
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.news_url=", "--allow-root", "--LabApp.extension_manager=readonly"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base, token, tmp_path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_budget_panel_in_jupyterlab(lab):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    base, token, scratch = lab
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{base}/lab/tree/notebooks/00_quickstart.ipynb?token={token}", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            select = page.locator(".jp-Dialog button", has_text=re.compile(r"^Select$"))
            try:  # JupyterLab may ask which kernel to start
                select.wait_for(timeout=10_000)
                select.click()
            except PlaywrightTimeout:
                pass
            # wait for the kernel to be idle before running everything
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=120_000)
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()

            run_button = page.locator("button.agentic-run")
            run_button.wait_for(timeout=int(os.environ.get("BROWSER_WAIT_MS", "300000")))
            run_button.scroll_into_view_if_needed()
            readouts = page.locator(".widget-slider .widget-readout")
            pct_before = readouts.nth(1).inner_text()

            # wait until the whole notebook has run (the kernel is idle again)
            page.wait_for_selector(".jp-Notebook-ExecutionIndicator[data-status='idle']", timeout=600_000)

            # move the target slider to the left with the mouse
            handle = page.locator(".widget-slider .noUi-handle").first
            box = handle.bounding_box()
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.down()
            page.mouse.move(box["x"] - 25, box["y"] + box["height"] / 2, steps=8)
            page.mouse.up()
            page.wait_for_function(
                "([el, before]) => el.innerText !== before",
                arg=[readouts.nth(1).element_handle(), pct_before], timeout=30_000,
            )
            target_text = readouts.first.inner_text()
            pct_after = readouts.nth(1).inner_text()
            assert float(pct_after) < float(pct_before), (pct_before, pct_after)

            run_button.click()
            page.wait_for_function(
                "(t) => { const r = document.querySelector('.agentic-result');"
                " return r && r.innerText.includes('target ' + t); }",
                arg=target_text, timeout=300_000,
            )
            table = page.locator(".agentic-history table")
            assert table.locator("td", has_text=re.compile(r"^converged$")).count() >= 1
            page.locator(".agentic-panel").screenshot(path=str(screenshot_path()))
        except Exception:
            page.screenshot(path=str(scratch / "failure.png"), full_page=True)
            print("failure screenshot:", scratch / "failure.png")
            raise
        finally:
            browser.close()


def test_screenshot_goes_to_smoke_unless_updating(monkeypatch):
    monkeypatch.delenv("UPDATE_FIGURES", raising=False)
    assert screenshot_path() == ROOT / "figures" / "smoke" / SCREENSHOT_NAME
    monkeypatch.setenv("UPDATE_FIGURES", "0")
    assert screenshot_path().parent.name == "smoke"
    monkeypatch.setenv("UPDATE_FIGURES", "1")
    assert screenshot_path() == ROOT / "figures" / SCREENSHOT_NAME
