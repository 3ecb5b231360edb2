"""Scoring checkpoint(s) on a labelled split, with the same prediction path as ``buildings predict``.

Every model gets the pooled per-class IoU, mean IoU, frequency-weighted IoU and pixel accuracy (a
binary model is scored as two classes, background and building); binary models also get the
contest Dice (mean per-image Dice, 1 when both empty) with IoU, precision, recall, and optionally
the contest Dice at each threshold of a sweep (``buildings tune-threshold``), from one pass of
predictions. Pixels labelled 255 are left out of every score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from buildings.errors import ConfigError
from buildings.formats.label_maps import confusion_matrix, score_confusion
from buildings.formats.submission import image_dice, image_iou
from buildings.inference.predictor import Predictor
from buildings.inference.tuning import THRESHOLDS as DEFAULT_THRESHOLDS

__all__ = ["DEFAULT_THRESHOLDS", "Evaluation", "evaluate"]


@dataclass
class Evaluation:
    """Scores of a model on a labelled split; the binary-only ones are NaN for multi-class models."""

    class_iou: list
    miou: float
    fwiou: float
    accuracy: float
    n_images: int
    class_names: tuple = ()
    dice: float = float("nan")  # the contest score
    iou: float = float("nan")
    precision: float = float("nan")
    recall: float = float("nan")
    dice_with_buildings: float = float("nan")
    n_empty: int = 0
    threshold_dice: dict = field(default_factory=dict)  # {threshold: contest Dice} of a sweep
    per_image: list = field(default_factory=list)  # (name, score, iou) sorted worst first

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "per_image"}

    @property
    def best_threshold(self) -> float | None:
        """The swept threshold with the best contest Dice (ties: the one nearest 0.5)."""
        if not self.threshold_dice:
            return None
        return max(self.threshold_dice, key=lambda t: (self.threshold_dice[t], -abs(t - 0.5)))


def evaluate(predictor: Predictor, data, split: str = "validation", data_dir=None, *,
             thresholds: Sequence[float] | None = None, gallery=None,
             gallery_n: int = 8, progress: Callable[[int], None] | None = None) -> Evaluation:
    """Score ``predictor`` on ``split`` of ``data`` (a dataset name or folder, or an opened
    :class:`~buildings.data.splits.SplitSource`), with the predictor's rule (``predictor.rule``).

    ``thresholds`` (binary models): also the contest Dice at each (``Evaluation.threshold_dice``).
    ``gallery``: a PNG figure of the ``gallery_n`` worst images (binary: found buildings, false
    positives and misses in three colours; multi-class: predicted classes, wrong pixels outlined).
    """
    from buildings.data.splits import SplitSource, labelled_items, open_split

    source = data if isinstance(data, SplitSource) else open_split(data, split, data_dir)
    task = predictor.task
    task.check_same(source.task, "the model", f"the dataset {source.directory}")
    if thresholds and not task.binary:
        raise ConfigError("a threshold sweep is for binary models; a multi-class prediction is the argmax")
    rule = predictor.rule
    n_classes = task.score_classes
    confusion = np.zeros((n_classes, n_classes), np.int64)
    sweep = {float(t): [] for t in (thresholds or ())}
    per_image, tp, fp, fn = [], 0, 0, 0
    built, empty = [], 0
    worst_pool = []
    for name, (image, truth), probs in predictor.stream(labelled_items(source, "score")):
        labels = rule.mask(probs)
        image_confusion = confusion_matrix(truth, labels, n_classes)
        confusion += image_confusion
        if task.binary:  # the contest's per-image Dice and its companions
            pred, truth = labels.astype(bool), truth.astype(bool)
            score, iou = image_dice(pred, truth), image_iou(pred, truth)
            tp += int(np.count_nonzero(pred & truth))
            fp += int(np.count_nonzero(pred & ~truth))
            fn += int(np.count_nonzero(~pred & truth))
            if truth.any():
                built.append(score)
            else:
                empty += 1
            for t in sweep:
                sweep[t].append(image_dice(rule.with_threshold(t).mask(probs).astype(bool), truth))
        else:  # per image: pixel accuracy and mean IoU over the classes it shows
            image_score = score_confusion(image_confusion)
            score, iou = image_score.accuracy, image_score.miou
        per_image.append((name, score, iou))
        if gallery is not None:
            worst_pool.append((score, name, image, truth, labels))
            worst_pool = sorted(worst_pool, key=lambda item: item[0])[:gallery_n]
        if progress:
            progress(1)
    per_image.sort(key=lambda row: row[1])
    pooled = score_confusion(confusion, len(per_image))
    result = Evaluation(class_iou=pooled.class_iou, miou=pooled.miou, fwiou=pooled.fwiou,
                        accuracy=pooled.accuracy, n_images=len(per_image), per_image=per_image,
                        class_names=tuple(source.task.score_class_names))
    if task.binary:
        result.dice = float(np.mean([d for _, d, _ in per_image]))
        result.iou = float(np.mean([i for _, _, i in per_image]))
        result.precision, result.recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        result.dice_with_buildings = float(np.mean(built)) if built else float("nan")
        result.n_empty = empty
        result.threshold_dice = {t: float(np.mean(v)) for t, v in sweep.items()}
    if gallery is not None:
        _write_gallery(gallery, worst_pool, task, source)
    return result


def _write_gallery(path, items, task, source) -> None:
    """The worst images, each with its name and score, truth against prediction, with a legend."""
    from buildings.figures import Panel, panels_figure

    score_name = "Dice" if task.binary else "accuracy"
    panels = [Panel(name, image, truth=truth, prediction=pred, score=score, score_name=score_name)
              for score, name, image, truth, pred in items]
    title = (f"The {len(panels)} worst {source.split} images by {score_name} "
             f"(of {len(source)} in {source.label})")
    panels_figure(path, panels, title=title, task=task)
