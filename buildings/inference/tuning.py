"""Contest-aware post-processing, tuned on a labelled split: ``buildings tune``.

The contest scores the mean over tiles of per-tile Dice, 1 when truth and prediction are both empty:
one false pixel on an empty tile costs that tile everything. So besides the threshold, min-area and
hole filling, :func:`tune_postprocess` searches the empty-image gates (drop the whole mask when fewer
than A pixels are left, or when the tile's highest probability is below P), jointly, for the contest
Dice. It searches exactly :class:`~buildings.inference.prediction.MaskRule`, the rule ``predict``
applies: the predictor runs once per image; every threshold × min-area × fill-holes mask is made
once by ``MaskRule.block_mask``, and the gates are ``Postprocess.empty`` over all images at once.

The choice is written as ``postprocess.json`` beside the checkpoint (``prediction.save_choice``),
and ``buildings predict`` / ``evaluate`` / ``serve`` apply it by default (``prediction.resolve_rule``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from buildings.errors import ConfigError
from buildings.formats.submission import image_dice
from buildings.inference.prediction import Choice, MaskRule, Postprocess

__all__ = ["AREA_GATES", "FILL_HOLES", "MIN_AREAS", "PEAK_GATES", "THRESHOLDS", "tune_postprocess"]

# The one threshold grid: `buildings tune` searches it, `buildings tune-threshold` sweeps it.
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.1, 0.91, 0.05), 2))
MIN_AREAS = (0, 16, 32, 64, 128, 256)
FILL_HOLES = (False, True)
AREA_GATES = (0, 32, 64, 128, 256, 512, 1024)
PEAK_GATES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)


def _gated(dice: np.ndarray, truth_empty: np.ndarray, drop: np.ndarray) -> float:
    """Mean contest Dice when the tiles in ``drop`` are predicted empty."""
    return float(np.where(drop, truth_empty.astype(float), dice).mean())


def tune_postprocess(predictor, source, *, thresholds: Sequence[float] = THRESHOLDS,
                     min_areas: Sequence[int] = MIN_AREAS, fill_options: Sequence[bool] = FILL_HOLES,
                     area_gates: Sequence[int] = AREA_GATES, peak_gates: Sequence[float] = PEAK_GATES,
                     checkpoints: Sequence = (), progress: Callable[[int], None] | None = None) -> Choice:
    """Search threshold, min-area, hole filling and the empty-tile gates jointly for the contest
    Dice on ``source`` (a labelled split of a binary dataset). Ties go to the simpler choice."""
    from buildings.data.splits import labelled_items

    if 0.5 not in thresholds:
        raise ConfigError("the threshold grid must include 0.5 (the baseline)")
    task = predictor.task
    if not task.binary:
        raise ConfigError("post-processing is tuned for binary (building) models; a multi-class prediction is the argmax")
    task.check_same(source.task, "the model", f"the dataset {source.directory}")
    if predictor.vote:
        raise ConfigError("tuning needs mean probabilities: drop --vote")
    probabilities, truths = [], []
    for _, (_, truth), probs in predictor.stream(labelled_items(source, "tune")):
        probabilities.append(probs)
        truths.append(truth.astype(bool))
        if progress:
            progress(1)
    if not truths:
        raise ConfigError(f"split {source.split!r} of {source.directory} is empty: nothing to tune on")
    truth_empty = np.array([not t.any() for t in truths])
    peaks = np.array([float(p.max()) for p in probabilities])

    table = {}  # (threshold, min_area, fill) -> (per-image dice, per-image predicted area), before the gates
    for t, min_area, fill in itertools.product(thresholds, min_areas, fill_options):
        rule = MaskRule(t, Postprocess(min_area=min_area, fill_holes=fill))
        masks = [rule.block_mask(p) for p in probabilities]
        table[t, min_area, fill] = (np.array([image_dice(m.astype(bool), tr) for m, tr in zip(masks, truths)]),
                                    np.array([np.count_nonzero(m) for m in masks]))

    def score(t, min_area, fill, area_gate, peak_gate) -> float:
        dice, area = table[t, min_area, fill]
        gates = Postprocess(empty_below_area=area_gate, empty_below_peak=peak_gate)
        return _gated(dice, truth_empty, gates.empty(area, peaks))

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
    return Choice(rule=MaskRule(float(t), Postprocess(min_area=int(min_area), fill_holes=bool(fill),
                                                      empty_below_area=int(area_gate),
                                                      empty_below_peak=float(peak_gate))),
                  score=score(*best), baseline=baseline, steps=[[label, round(v, 6)] for label, v in steps],
                  tuned_on={"data": str(source.directory), "split": source.split, "images": len(truths),
                            "empty_images": int(truth_empty.sum()), "tta": predictor.tta,
                            "checkpoints": [str(c) for c in checkpoints]})
