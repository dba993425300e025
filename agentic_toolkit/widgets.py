"""ipywidgets front end: a budget panel that runs the agentic search and shows it live.

The target is a slider in GMACs linked to a slider in % of the baseline; the tolerance
band, backend and revision limit sit beside it. While a search runs, the panel shows a
progress bar, the Master agent's status, a live history table and the convergence plot.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as W
import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import display

from .agents.history import history_frame
from .agents.presets import PRESETS, search_preset
from .plots import plot_convergence
from .units import format_macs

#: The columns of the panel's live history table.
HISTORY_COLUMNS = ("revision", "proposer", "pruning_ratio", "achieved_macs", "error_pct", "score", "status")


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The panel's compact table of a :func:`history_frame` with ``status``: MACs formatted, numbers rounded."""
    out = frame.reindex(columns=list(HISTORY_COLUMNS)).copy()
    out["achieved_macs"] = [format_macs(int(m)) if _number(m) and m else "-" for m in out["achieved_macs"]]
    out["error_pct"] = [round(float(e), 3) if _number(e) else float("nan") for e in out["error_pct"]]
    out["score"] = [round(float(s), 2) if _number(s) else float("nan") for s in out["score"]]
    return out


def _number(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


class BudgetPanel:
    """Interactive MAC-budget control for :func:`agentic_toolkit.run_agentic_pruning`.

    ``panel.show()`` (or displaying the panel) renders it; ``panel.run()`` runs a search
    with the current settings (also what the Run button does) and returns the
    ``SearchResult``, also kept in ``panel.result``. Extra keyword arguments go to the
    search function (e.g. ``evaluator=``, ``calibration=``, ``log_path=``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        example_inputs: torch.Tensor,
        *,
        target_fraction: float = 0.5,
        tolerance: tuple[float, float] = (1.0, 5.0),
        backend: str = "analyst",
        backends: Sequence[str] = ("analyst", "grid", "anthropic", "openai"),
        max_revisions: int | None = None,
        preset: str = "default",
        base_macs: int | None = None,
        search: Callable[..., Any] | None = None,
        **search_kwargs: Any,
    ):
        from .profiling.profile import profile_macs

        self.model, self.example_inputs = model, example_inputs
        self.base_macs = int(base_macs or profile_macs(model, example_inputs).total_macs)
        self.search_kwargs = search_kwargs
        self._search = search
        self.records: list[dict] = []
        self.result: Any = None
        self.error: BaseException | None = None

        g = self.base_macs / 1e9
        step = max(g / 1000, 1e-4)
        self.target_gmacs = W.FloatSlider(
            value=g * target_fraction, min=g * 0.05, max=g, step=step, readout_format=".4f",
            description="target (GMACs)", continuous_update=False, style={"description_width": "110px"},
            layout=W.Layout(width="520px"),
        )
        self.target_pct = W.FloatSlider(
            value=100 * target_fraction, min=5.0, max=100.0, step=0.1, readout_format=".1f",
            description="target (% base)", continuous_update=False, style={"description_width": "110px"},
            layout=W.Layout(width="520px"),
        )
        self._syncing = False
        self.target_gmacs.observe(self._from_gmacs, names="value")
        self.target_pct.observe(self._from_pct, names="value")
        self.over = W.BoundedFloatText(value=tolerance[0], min=0.0, max=50.0, step=0.5, description="over (+%)",
                                       layout=W.Layout(width="170px"))
        self.under = W.BoundedFloatText(value=tolerance[1], min=0.0, max=50.0, step=0.5, description="under (-%)",
                                        layout=W.Layout(width="170px"))
        self.backend = W.Dropdown(options=list(backends), value=backend, description="backend",
                                  layout=W.Layout(width="220px"))
        self.preset = W.Dropdown(options=list(PRESETS), value=search_preset(preset).name, description="preset",
                                 layout=W.Layout(width="220px"))
        revisions = max_revisions or PRESETS[self.preset.value].max_revisions or 8
        self.max_revisions = W.IntSlider(value=revisions, min=1, max=20, description="max revisions",
                                         style={"description_width": "100px"})
        self.preset.observe(self._from_preset, names="value")
        self.run_button = W.Button(description="Run", button_style="primary", icon="play")
        self.run_button.add_class("agentic-run")
        self.run_button.on_click(lambda _: self._run_safely())
        self.progress = W.IntProgress(value=0, min=0, max=revisions, description="revisions")
        self.status = W.HTML("<i>set a target and press Run</i>")
        self.history_html = W.HTML()
        self.history_html.add_class("agentic-history")
        self.plot_out = W.Output()
        self.result_html = W.HTML()
        self.result_html.add_class("agentic-result")
        header = W.HTML(
            f"<b>{html.escape(type(model).__name__)}</b>: baseline {format_macs(self.base_macs)} MACs "
            f"for input {tuple(example_inputs.shape)}"
        )
        self.widget = W.VBox([
            header,
            self.target_gmacs,
            self.target_pct,
            W.HBox([self.over, self.under, self.backend]),
            W.HBox([self.preset, self.max_revisions, self.run_button]),
            W.HBox([self.progress, self.status]),
            W.HBox([self.history_html, self.plot_out]),
            self.result_html,
        ])
        self.widget.add_class("agentic-panel")

    # --- linked sliders ---------------------------------------------------------------------
    def _from_gmacs(self, change: dict) -> None:
        if not self._syncing:
            self._syncing = True
            self.target_pct.value = 100.0 * change["new"] * 1e9 / self.base_macs
            self._syncing = False

    def _from_preset(self, change: dict) -> None:
        """A preset brings its revision budget (a timed one leaves the slider as it is)."""
        self.max_revisions.value = PRESETS[change["new"]].max_revisions or self.max_revisions.value

    def _from_pct(self, change: dict) -> None:
        if not self._syncing:
            self._syncing = True
            self.target_gmacs.value = change["new"] / 100.0 * self.base_macs / 1e9
            self._syncing = False

    @property
    def target_macs(self) -> int:
        """The current target in MACs."""
        return int(round(self.target_gmacs.value * 1e9))

    @property
    def tolerance(self) -> tuple[float, float]:
        return (float(self.over.value), float(self.under.value))

    # --- running -------------------------------------------------------------------------
    def _on_revision(self, record: dict) -> None:
        self.records.append(record)
        self.progress.value = min(len(self.records), self.progress.max)
        frame = history_frame(self.records, self.target_macs, self.tolerance)
        table = display_table(frame)
        self.history_html.value = table.to_html(index=False, classes="agentic-history-table", na_rep="-")
        last = table.iloc[-1]
        self.status.value = (
            f"revision {last['revision']}: {last['achieved_macs']} MACs, error {last['error_pct']:+.2f}% "
            f"({last['status']})"
        )
        with self.plot_out:
            self.plot_out.clear_output(wait=True)
            fig = plot_convergence(frame, self.tolerance)
            display(fig)
            plt.close(fig)

    def run(self) -> Any:
        """Run the search with the panel's settings; returns (and keeps) the SearchResult."""
        from .agents.master import run_agentic_pruning

        search = self._search or run_agentic_pruning
        self.records, self.result, self.error = [], None, None
        self.progress.max, self.progress.value = self.max_revisions.value, 0
        self.result_html.value = ""
        self.status.value = f"searching for {format_macs(self.target_macs)} MACs with <b>{self.backend.value}</b>..."
        self.run_button.disabled = True
        try:
            self.result = search(
                self.model, self.target_macs, self.example_inputs,
                tolerance=self.tolerance, max_revisions=self.max_revisions.value,
                backend=self.backend.value, preset=self.preset.value, on_revision=self._on_revision,
                **self.search_kwargs,
            )
        finally:
            self.run_button.disabled = False
        res = self.result
        verdict = "converged" if res.converged else "did not converge"
        if res.macs is None:  # no revision could be measured: say why instead of a number
            self.result_html.value = f"<b>{verdict}</b> for target {self.target_gmacs.value:.4f} GMACs: {html.escape(res.stop_reason)}"
            self.status.value = f"done: {verdict}"
            return res
        self.result_html.value = (
            f"<b>{verdict}</b> after {res.revisions} revision(s) for target {self.target_gmacs.value:.4f} GMACs: "
            f"{format_macs(res.macs)} MACs ({100 * res.macs / self.base_macs:.1f}% of baseline)"
            + (f", score {res.score:.4g}" if res.score is not None else "")
        )
        self.status.value = f"done: {verdict}"
        return res

    def _run_safely(self) -> None:
        """Button handler: show errors in the panel instead of losing them in the log."""
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - reported to the user in the panel
            self.error = exc
            self.status.value = f"<span style='color:#b00'>error: {html.escape(str(exc))}</span>"

    def show(self) -> W.VBox:
        """Display the panel (also returned, for embedding)."""
        display(self.widget)
        return self.widget

    def _ipython_display_(self) -> None:
        display(self.widget)
