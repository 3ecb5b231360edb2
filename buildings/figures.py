"""Figures for people, drawn with matplotlib: image panels with truth and prediction in distinct
colours, a name and a score on each, a legend and a title (``data preview``, ``evaluate --gallery``,
the demo's ``overlay.png``), and a run's training curves (``curves.png``).

matplotlib is used through its object API (``Figure`` + the Agg canvas), never ``pyplot``: no
global state, no display needed, safe in worker threads. Files are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from buildings.files import write_bytes
from buildings.task import IGNORE_INDEX, Task
from buildings.visualize import PALETTE

__all__ = ["Panel", "curves_figure", "panels_figure"]

# Binary masks: where truth and prediction agree, where the prediction adds, where it misses.
# Yellow, red and blue stand out on vegetation, roofs and roads alike (green would vanish on grass).
HIT, FALSE_POSITIVE, MISS = (255, 215, 0), (235, 30, 30), (30, 140, 255)
TRUTH_ONLY, PREDICTION_ONLY = (255, 215, 0), (255, 120, 0)


@dataclass
class Panel:
    """One image of a figure: ``truth`` and/or ``prediction`` masks (H, W) over ``image`` (RGB)."""

    name: str
    image: np.ndarray
    truth: np.ndarray | None = None
    prediction: np.ndarray | None = None
    score: float | None = None
    score_name: str = "Dice"


def _tint(image: np.ndarray, where: np.ndarray, colour, alpha: float = 0.45) -> None:
    image[where] = (image[where] * (1 - alpha) + np.asarray(colour, np.float32) * alpha).astype(np.uint8)


def _outline(image: np.ndarray, where: np.ndarray, colour) -> None:
    contours, _ = cv2.findContours(where.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, tuple(int(c) for c in colour), 1)


def _binary_panel(panel: Panel) -> np.ndarray:
    shown = panel.image.copy()
    truth = None if panel.truth is None else panel.truth.astype(bool)
    pred = None if panel.prediction is None else panel.prediction.astype(bool)
    if truth is not None and pred is not None:
        for where, colour in ((truth & pred, HIT), (pred & ~truth, FALSE_POSITIVE), (truth & ~pred, MISS)):
            _tint(shown, where, colour, alpha=0.5)
            _outline(shown, where, colour)
    else:
        mask, colour = (truth, TRUTH_ONLY) if truth is not None else (pred, PREDICTION_ONLY)
        if mask is not None:
            _tint(shown, mask, colour)
            _outline(shown, mask, colour)
    return shown


def _class_panel(panel: Panel) -> np.ndarray:
    """Multi-class: the prediction's (else the truth's) class colours; wrong pixels outlined white."""
    shown = panel.image.copy()
    labels = panel.prediction if panel.prediction is not None else panel.truth
    if labels is None:
        return shown
    for index in np.unique(labels):
        if index != IGNORE_INDEX:
            _tint(shown, labels == index, PALETTE[int(index) % len(PALETTE)])
    if panel.prediction is not None and panel.truth is not None:
        _outline(shown, (panel.prediction != panel.truth) & (panel.truth != IGNORE_INDEX), (255, 255, 255))
    return shown


def _legend(task: Task, has_truth: bool, has_prediction: bool, classes: Sequence[int]):
    from matplotlib.patches import Patch

    def patch(colour, label):
        return Patch(facecolor=np.asarray(colour) / 255, edgecolor="black", label=label)

    if task.binary:
        if has_truth and has_prediction:
            return [patch(HIT, "building, found"), patch(FALSE_POSITIVE, "predicted, not a building (false positive)"),
                    patch(MISS, "building, missed")]
        return [patch(TRUTH_ONLY, "building (truth)")] if has_truth else [patch(PREDICTION_ONLY, "building (predicted)")]
    names = task.class_names
    handles = [patch(PALETTE[c % len(PALETTE)], names[c] if c < len(names) else f"class {c}") for c in classes]
    if has_truth and has_prediction:
        handles.append(patch((255, 255, 255), "outlined: wrong class"))
    return handles


def panels_figure(path, panels: Sequence[Panel], *, title: str, task: Task | None = None, columns: int = 4,
                  tile_inches: float = 2.6, max_side: int = 384) -> Path:
    """Write ``panels`` as a grid PNG with a title, each panel named (and scored), and a legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    task = task or Task(1)
    panels = list(panels)
    columns = max(1, min(columns, len(panels) or 1))
    rows = max(1, math.ceil(len(panels) / columns))
    figure = Figure(figsize=(columns * tile_inches, rows * (tile_inches + 0.35) + 0.9), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    classes: set[int] = set()
    for ax in axes.flat:
        ax.axis("off")
    for ax, panel in zip(axes.flat, panels):
        shown = _binary_panel(panel) if task.binary else _class_panel(panel)
        if not task.binary:
            for labels in (panel.truth, panel.prediction):
                if labels is not None:
                    classes.update(int(c) for c in np.unique(labels) if c != IGNORE_INDEX)
        scale = max_side / max(shown.shape[:2])
        if scale < 1:
            shown = cv2.resize(shown, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ax.imshow(shown, interpolation="nearest")
        label = panel.name if panel.score is None else f"{panel.name}\n{panel.score_name} {panel.score:.3f}"
        ax.set_title(label, fontsize=8)
    has_truth = any(p.truth is not None for p in panels)
    has_prediction = any(p.prediction is not None for p in panels)
    handles = _legend(task, has_truth, has_prediction, sorted(classes))
    figure.suptitle(title, fontsize=11)
    figure.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 4) or 1, fontsize=8,
                  frameon=False)
    return _save(figure, path)


def curves_figure(path, history, *, monitor: str, title: str) -> Path:
    """Losses and validation metrics per epoch (1-based, as history.csv numbers them), best epoch marked,
    and the start of each training phase after the first (the encoder unfrozen) shaded from there."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    losses, metrics = figure.subplots(1, 2)
    epochs = history["epoch"].to_numpy()
    marker = "o" if len(epochs) < 30 else None
    for column in ("loss", "val_loss"):
        if column in history:
            losses.plot(epochs, history[column], marker=marker, label="training" if column == "loss" else "validation")
    losses.set(title="Loss", xlabel="epoch", ylabel="loss")
    shown = [c for c in history.columns if c.startswith("val_") and c != "val_loss"]
    for column in shown:
        metrics.plot(epochs, history[column], marker=marker, label=column.removeprefix("val_"),
                     linewidth=2.5 if column == monitor else 1.2)
    metrics.set(title="Validation metrics", xlabel="epoch", ylim=(0, 1))
    if monitor in history and history[monitor].notna().any():
        best = history.loc[history[monitor].idxmax()]
        for ax in (losses, metrics):
            ax.axvline(best["epoch"], color="grey", linestyle="--", linewidth=1,
                       label=f"best: epoch {int(best['epoch'])}, {monitor.removeprefix('val_')} {best[monitor]:.4f}")
    if "phase" in history and history["phase"].notna().any():
        phases = history["phase"].fillna(0).to_numpy()
        for index in range(1, len(epochs)):
            if phases[index] > phases[index - 1]:
                for ax in (losses, metrics):
                    ax.axvspan(epochs[index] - 0.5, epochs.max() + 0.5, color="tab:orange", alpha=0.08,
                               label=f"encoder unfrozen from epoch {int(epochs[index])}")
    for ax in (losses, metrics):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        if len(epochs):
            ax.set_xlim(0.5, max(epochs.max(), 1) + 0.5)
            ax.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)


def _save(figure, path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())
