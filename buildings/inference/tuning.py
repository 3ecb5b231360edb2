"""Contest-aware post-processing, tuned on a labelled split: ``buildings tune``.

The contest scores the mean over tiles of per-tile Dice, 1 when truth and prediction are both empty:
one false pixel on an empty tile costs that tile everything. So besides the threshold, min-area and
hole filling, :func:`tune_postprocess` searches an empty-tile gate (drop the whole mask when fewer
than A pixels are left, or when the tile's highest probability is below P), jointly, for the contest
Dice. The predictor runs once per image; every combination is scored from the kept probabilities
(threshold × min-area × fill holes masks are computed once each, the gates are vectorised on top).

The choice is written as ``postprocess.json`` beside the checkpoint (:func:`save_choice`), and
``buildings predict`` / ``evaluate`` apply it by default (:func:`load_choice`; flags override).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from buildings.errors import ConfigError, DataError
from buildings.files import write_text
from buildings.formats.submission import image_dice
from buildings.inference.postprocess import Postprocess

__all__ = ["CHOICE_FILE", "Choice", "choice_path", "load_choice", "save_choice", "tune_postprocess"]

CHOICE_FILE = "postprocess.json"
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.25, 0.76, 0.05))
MIN_AREAS = (0, 16, 32, 64, 128, 256)
FILL_HOLES = (False, True)
AREA_GATES = (0, 32, 64, 128, 256, 512, 1024)
PEAK_GATES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclass
class Choice:
    """A threshold and a :class:`Postprocess`, with how they scored where they were tuned."""

    threshold: float = 0.5
    postprocess: Postprocess = field(default_factory=Postprocess)
    score: float | None = None  # contest Dice on the tuning split
    baseline: float | None = None  # threshold 0.5, nothing else
    steps: list = field(default_factory=list)  # (what was added, contest Dice): each choice's effect
    tuned_on: dict = field(default_factory=dict)

    def describe(self) -> str:
        return f"threshold {self.threshold:g}, {self.postprocess.describe()}"

    def as_dict(self) -> dict:
        return {"threshold": self.threshold, **asdict(self.postprocess), "score": self.score,
                "baseline": self.baseline, "steps": self.steps, "tuned_on": self.tuned_on}


def choice_path(checkpoint) -> Path:
    return Path(checkpoint).expanduser().parent / CHOICE_FILE


def save_choice(choice: Choice, path) -> Path:
    return write_text(path, json.dumps(choice.as_dict(), indent=2) + "\n")


def load_choice(path) -> Choice:
    """Read a ``postprocess.json``; one clear error when it is not one."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
        post = Postprocess(min_area=int(values["min_area"]), fill_holes=bool(values["fill_holes"]),
                           empty_below_area=int(values["empty_below_area"]),
                           empty_below_peak=float(values["empty_below_peak"]))
        threshold = float(values["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a post-processing choice written by `buildings tune` ({err})") from None
    if not 0 < threshold < 1:
        raise DataError(f"{path}: threshold {threshold} is not in (0, 1)")
    return Choice(threshold=threshold, postprocess=post, score=values.get("score"), baseline=values.get("baseline"),
                  steps=values.get("steps", []), tuned_on=values.get("tuned_on", {}))


def _gated(dice: np.ndarray, truth_empty: np.ndarray, drop: np.ndarray) -> float:
    """Mean contest Dice when the tiles in ``drop`` are predicted empty."""
    return float(np.where(drop, truth_empty.astype(float), dice).mean())


def tune_postprocess(predictor, source, *, thresholds: Sequence[float] = THRESHOLDS,
                     min_areas: Sequence[int] = MIN_AREAS, fill_options: Sequence[bool] = FILL_HOLES,
                     area_gates: Sequence[int] = AREA_GATES, peak_gates: Sequence[float] = PEAK_GATES,
                     checkpoints: Sequence = (), progress: Callable[[int], None] | None = None) -> Choice:
    """Search threshold, min-area, hole filling and the empty-tile gates jointly for the contest
    Dice on ``source`` (a labelled split of a binary dataset). Ties go to the simpler choice."""
    from buildings.data.splits import decode_record

    if 0.5 not in thresholds:
        raise ConfigError("the threshold grid must include 0.5 (the baseline)")
    task = predictor.task
    if not task.binary:
        raise ConfigError("post-processing is tuned for binary (building) models; a multi-class prediction is the argmax")
    task.check_same(source.task, "the model", f"the dataset {source.directory}")
    if predictor.vote:
        raise ConfigError("tuning needs mean probabilities: drop --vote")
    probabilities, truths = [], []
    for start in range(0, len(source), predictor.batch_size):
        records = [source[i] for i in range(start, min(start + predictor.batch_size, len(source)))]
        if not all(bool(r.get("has_mask", True)) for r in records):
            raise ConfigError(f"split {source.split!r} of {source.directory} has images without masks: cannot tune on it")
        decoded = [decode_record(r) for r in records]
        for probs, (_, truth) in zip(predictor.batch_probabilities([im for im, _ in decoded]), decoded, strict=True):
            probabilities.append(np.squeeze(probs).astype(np.float32))
            truths.append(truth.astype(bool))
            if progress:
                progress(1)
    if not truths:
        raise ConfigError(f"split {source.split!r} of {source.directory} is empty: nothing to tune on")
    truth_empty = np.array([not t.any() for t in truths])
    peaks = np.array([float(p.max()) for p in probabilities])

    table = {}  # (threshold, min_area, fill) -> (per-image dice, per-image predicted area)
    for t, min_area, fill in itertools.product(thresholds, min_areas, fill_options):
        post = Postprocess(min_area=min_area, fill_holes=fill)
        masks = [post((p >= t).astype(np.uint8)) for p in probabilities]
        table[t, min_area, fill] = (np.array([image_dice(m.astype(bool), tr) for m, tr in zip(masks, truths)]),
                                    np.array([np.count_nonzero(m) for m in masks]))

    def score(t, min_area, fill, area_gate, peak_gate) -> float:
        dice, area = table[t, min_area, fill]
        return _gated(dice, truth_empty, (area < area_gate) | (peaks < peak_gate))

    def complexity(t, min_area, fill, area_gate, peak_gate) -> tuple:
        return (bool(area_gate) + bool(peak_gate) + bool(fill) + bool(min_area), abs(t - 0.5))

    candidates = list(itertools.product(thresholds, min_areas, fill_options, area_gates, peak_gates))
    best = max(candidates, key=lambda c: (round(score(*c), 10), tuple(-x for x in complexity(*c))))
    t, min_area, fill, area_gate, peak_gate = best
    baseline = score(0.5, min_areas[0], fill_options[0], area_gates[0], peak_gates[0])
    # The effect of each choice: added one at a time, in the order a user would reach for them.
    steps = [("threshold 0.5, nothing else", baseline)]
    stages = [(f"threshold {t:g}", (t, min_areas[0], fill_options[0], area_gates[0], peak_gates[0])),
              (f"+ min-area {min_area}" if min_area else "+ no min-area", (t, min_area, fill_options[0], area_gates[0], peak_gates[0])),
              ("+ fill holes" if fill else "+ no hole filling", (t, min_area, fill, area_gates[0], peak_gates[0])),
              (f"+ empty below {area_gate} px" if area_gate else "+ no area gate",
               (t, min_area, fill, area_gate, peak_gates[0])),
              (f"+ empty below peak {peak_gate:g}" if peak_gate else "+ no peak gate", best)]
    steps += [(label, score(*combo)) for label, combo in stages]
    return Choice(threshold=float(t),
                  postprocess=Postprocess(min_area=int(min_area), fill_holes=bool(fill),
                                          empty_below_area=int(area_gate), empty_below_peak=float(peak_gate)),
                  score=score(*best), baseline=baseline, steps=[[label, round(v, 6)] for label, v in steps],
                  tuned_on={"data": str(source.directory), "split": source.split, "images": len(truths),
                            "empty_images": int(truth_empty.sum()), "tta": predictor.tta,
                            "checkpoints": [str(c) for c in checkpoints]})
