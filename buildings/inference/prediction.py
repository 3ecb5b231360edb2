"""THE probability → mask rule: every path that turns probabilities into a mask calls :class:`MaskRule`.

Tiles and folders (``predict``), GeoTIFF blocks (``geo.predict``), ``evaluate``, ``tune`` (which
searches exactly this rule), ``serve`` (API and page) and the ONNX path all go through it, so a
rule tuned on validation tiles is the rule a GeoTIFF or a served upload gets.

For a binary (building) model, in this order:

1. **threshold**: a pixel is a building when its probability is ``>= threshold``
   (:func:`above`). An ensemble's majority vote (``majority``): each model's ballot is its own
   mask at the threshold, and a pixel is a building when more than half the (weighted) ballots say so;
2. **min-area**: buildings (:data:`CONNECTIVITY`-connected components) under ``min_area`` pixels are
   dropped;
3. **hole filling**: background regions enclosed by buildings (not connected to the image border;
   the background's connectivity is the buildings' dual, 8) become building;
4. **empty-image gates**: the whole mask is dropped when fewer than ``empty_below_area`` building
   pixels are left, or when the image's highest building probability is below ``empty_below_peak``
   (an empty contest tile with one false pixel scores 0). A GeoTIFF is one image: its gates are
   judged on the whole raster.

A multi-class model's mask is the argmax; none of the binary steps applies to it (and asking for
them is refused). A raster predicted in blocks uses :meth:`MaskRule.block_mask`: the same steps,
except that components touching an open edge of the block (one with more raster beyond it) are
kept whatever their size, since their size is not known inside the block.

A tuned rule lives in ``postprocess.json`` beside the checkpoint (:class:`Choice`, written by
``buildings tune``); :func:`resolve_rule` decides what applies: that file, another one, or none,
with the options a user gave overriding it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import ConfigError, DataError, excerpt
from buildings.files import write_text

__all__ = ["CHOICE_FILE", "CONNECTIVITY", "Choice", "MaskRule", "Postprocess", "above", "choice_path",
           "fill_holes", "load_choice", "remove_small_components", "resolve_rule", "save_choice"]

CONNECTIVITY = 4  # buildings are 4-connected components, as rasterio traces polygons (geo.vectorize)
CHOICE_FILE = "postprocess.json"


def above(probs: np.ndarray, threshold: float) -> np.ndarray:
    """The threshold comparison, the one place it is written: True where ``probs >= threshold``."""
    return probs >= threshold


def remove_small_components(mask: np.ndarray, min_area: int, open_edges=(False, False, False, False)
                            ) -> np.ndarray:
    """Drop buildings (:data:`CONNECTIVITY`-connected) of fewer than ``min_area`` pixels, except
    those touching an open edge (top, bottom, left, right): they continue beyond it."""
    mask = mask.astype(np.uint8, copy=False)
    if min_area <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=CONNECTIVITY)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    for is_open, edge in zip(open_edges, (labels[0], labels[-1], labels[:, 0], labels[:, -1]), strict=True):
        if is_open:
            keep[np.unique(edge)] = True
    keep[0] = False
    return keep[labels].astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not 8-connected to the image border (the dual of 4-connected buildings)."""
    mask = mask.astype(np.uint8, copy=False)
    if not mask.any():
        return mask
    padded = np.pad(mask, 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1, flags=8)
    padded[flood == 0] = 1
    return padded[1:-1, 1:-1]


@dataclass(frozen=True)
class Postprocess:
    """The binary steps after the threshold (see the module docstring); the default does nothing."""

    min_area: int = 0
    fill_holes: bool = False
    empty_below_area: int = 0
    empty_below_peak: float = 0.0

    @property
    def active(self) -> bool:
        return self.min_area > 1 or self.fill_holes or self.gated

    @property
    def gated(self) -> bool:
        return self.empty_below_area > 0 or self.empty_below_peak > 0

    def empty(self, building_pixels, peak):
        """Whether the gates drop an image with ``building_pixels`` left and highest probability
        ``peak`` (scalars, or arrays of images: ``buildings tune`` asks for many at once)."""
        return (np.asarray(building_pixels) < self.empty_below_area) | (np.asarray(peak) < self.empty_below_peak)

    def describe(self) -> str:
        parts = [f"min-area {self.min_area}" if self.min_area > 1 else "",
                 "fill holes" if self.fill_holes else "",
                 f"empty below {self.empty_below_area} px" if self.empty_below_area else "",
                 f"empty below peak probability {self.empty_below_peak:g}" if self.empty_below_peak else ""]
        return ", ".join(p for p in parts if p) or "no post-processing"


@dataclass(frozen=True)
class MaskRule:
    """Probabilities (H, W, C) → uint8 mask (H, W): the rule of the module docstring.

    Args:
        threshold: building probability from which a pixel is a building (binary models).
        postprocess: min-area, hole filling and the empty-image gates.
        majority: the probabilities are an ensemble's mean ballots (:meth:`ballots`): a pixel is a
            building when more than half of them say so.
    """

    threshold: float = 0.5
    postprocess: Postprocess = field(default_factory=Postprocess)
    majority: bool = False

    def __post_init__(self):
        if not 0 < float(self.threshold) < 1:
            raise ConfigError(f"threshold must be in (0, 1), got {self.threshold!r}")

    def check(self, task) -> MaskRule:
        """Refuse binary post-processing for a multi-class ``task``; returns self."""
        if self.postprocess.active and not task.binary:
            raise ConfigError(f"min-area, fill-holes and the empty gates are binary post-processing; this model "
                              f"has {task.num_classes} classes")
        return self

    def ballots(self, probs: np.ndarray) -> np.ndarray:
        """One model's ballot in a majority vote: 0/1 at the threshold (binary) or the argmax one-hot."""
        if probs.shape[-1] == 1:
            return above(probs, self.threshold).astype(np.float32)
        return np.eye(probs.shape[-1], dtype=np.float32)[probs.argmax(-1)]

    def labels(self, probs: np.ndarray) -> np.ndarray:
        """Step 1 alone: the thresholded (or voted) mask, or the argmax of N classes."""
        if probs.shape[-1] > 1:
            return probs.argmax(-1).astype(np.uint8)
        if self.majority:
            return (probs[..., 0] > 0.5).astype(np.uint8)
        return above(probs[..., 0], self.threshold).astype(np.uint8)

    def block_mask(self, probs: np.ndarray, open_edges=(False, False, False, False)) -> np.ndarray:
        """Steps 1-3 (no gates) on an image, or on a raster block whose ``open_edges`` (top,
        bottom, left, right) have more raster beyond them."""
        mask = self.labels(probs)
        if probs.shape[-1] > 1:
            return mask
        mask = remove_small_components(mask, self.postprocess.min_area, open_edges)
        return fill_holes(mask) if self.postprocess.fill_holes else mask

    def empty(self, building_pixels: int, peak: float) -> bool:
        """Step 4: whether the gates drop an image (or a whole raster) with these totals."""
        return bool(self.postprocess.empty(building_pixels, peak))

    def mask(self, probs: np.ndarray) -> np.ndarray:
        """The mask of one whole image: steps 1-4."""
        mask = self.block_mask(probs)
        if probs.shape[-1] == 1 and self.postprocess.gated and self.empty(np.count_nonzero(mask), float(probs.max())):
            return np.zeros_like(mask)
        return mask

    def with_threshold(self, threshold: float) -> MaskRule:
        return dataclasses.replace(self, threshold=float(threshold))

    def describe(self) -> str:
        cut = "majority vote" if self.majority else f"threshold {self.threshold:g}"
        return f"{cut}, {self.postprocess.describe()}"


# -- postprocess.json: a tuned rule --------------------------------------------------------------
@dataclass
class Choice:
    """A :class:`MaskRule` with how it scored where it was tuned (``buildings tune``)."""

    rule: MaskRule = field(default_factory=MaskRule)
    score: float | None = None  # contest Dice on the tuning split
    baseline: float | None = None  # threshold 0.5, nothing else
    steps: list = field(default_factory=list)  # (what was added, contest Dice): each choice's effect
    tuned_on: dict = field(default_factory=dict)

    def describe(self) -> str:
        return self.rule.describe()

    def as_dict(self) -> dict:
        return {"threshold": self.rule.threshold, **asdict(self.rule.postprocess), "score": self.score,
                "baseline": self.baseline, "steps": self.steps, "tuned_on": self.tuned_on}


def choice_path(checkpoint) -> Path:
    """Where ``buildings tune`` puts the choice for ``checkpoint``: postprocess.json beside it."""
    return Path(checkpoint).expanduser().parent / CHOICE_FILE


def save_choice(choice: Choice, path) -> Path:
    return write_text(path, json.dumps(choice.as_dict(), indent=2) + "\n")


CHOICE_BYTES = 1 << 20  # a postprocess.json is a few hundred bytes; anything past this is not one
# key: (kind, lowest, highest, lowest included, highest included): the file's schema
CHOICE_SCHEMA = {"threshold": (float, 0.0, 1.0, False, False), "min_area": (int, 0, 2**31 - 1, True, True),
                 "fill_holes": (bool, None, None, True, True), "empty_below_area": (int, 0, 2**31 - 1, True, True),
                 "empty_below_peak": (float, 0.0, 1.0, True, True)}


def _field(path, values: dict, key: str):
    """``values[key]`` checked against :data:`CHOICE_SCHEMA`: the right JSON type (true/false for a
    flag, a whole number for a pixel count), finite, in range; else one DataError naming it."""
    kind, low, high, low_in, high_in = CHOICE_SCHEMA[key]
    value = values[key]
    if kind is bool:
        if not isinstance(value, bool):
            raise DataError(f"{path}: {key} must be true or false, got {json.dumps(value)[:40]}")
        return value
    whole = isinstance(value, int) and not isinstance(value, bool)
    if (kind is int and not whole) or (kind is float and not (whole or isinstance(value, float))):
        raise DataError(f"{path}: {key} must be {'a whole number' if kind is int else 'a number'}, got "
                        f"{json.dumps(value)[:40]}")
    if not ((whole or math.isfinite(value)) and (low < value or (low_in and value == low))
            and (value < high or (high_in and value == high))):
        brackets = f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
        raise DataError(f"{path}: {key} {excerpt(value)} is not in {brackets}")
    return kind(value)


def load_choice(path) -> Choice:
    """Read a ``postprocess.json``, strictly (:data:`CHOICE_SCHEMA`); one clear error naming the
    file and the field when it is not one."""
    path = Path(path)
    try:
        if path.stat().st_size > CHOICE_BYTES:
            raise DataError(f"{path}: {path.stat().st_size} bytes is not a post-processing choice (at most "
                            f"{CHOICE_BYTES})")
        values = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)[:120]
        raise DataError(f"{path}: not a post-processing choice written by `buildings tune` ({reason})") from None
    if not isinstance(values, dict):
        raise DataError(f"{path}: not a post-processing choice written by `buildings tune` (a JSON object is)")
    missing = [key for key in CHOICE_SCHEMA if key not in values]
    if missing:
        raise DataError(f"{path}: no {', '.join(map(repr, missing))}; not a post-processing choice written by "
                        "`buildings tune`")
    fields = {key: _field(path, values, key) for key in CHOICE_SCHEMA}
    threshold = fields.pop("threshold")
    extras = {key: values.get(key) for key in ("score", "baseline")}
    for key, value in extras.items():
        if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                      and math.isfinite(value)):
            raise DataError(f"{path}: {key} must be a number or null, got {json.dumps(value)[:40]}")
    steps, tuned_on = values.get("steps", []), values.get("tuned_on", {})
    if not isinstance(steps, list) or not isinstance(tuned_on, dict):
        raise DataError(f"{path}: steps must be a list and tuned_on an object")
    return Choice(rule=MaskRule(threshold, Postprocess(**fields)), steps=steps, tuned_on=tuned_on, **extras)


def resolve_rule(checkpoint, postprocess_from="auto", **given) -> tuple[MaskRule, str]:
    """The rule to apply to ``checkpoint``'s predictions, and where it came from (for one line).

    ``postprocess_from``: ``auto`` (the postprocess.json beside ``checkpoint``, if any), ``none``, or
    a postprocess.json path. ``given``: the options the user gave (``threshold``, ``min_area``,
    ``fill_holes``); they override the file. Without a file, the options not given take their
    defaults (threshold 0.5, nothing else)."""
    unknown = set(given) - {"threshold", "min_area", "fill_holes"}
    if unknown:
        raise ConfigError(f"unknown post-processing options {sorted(unknown)}")
    path = None
    if postprocess_from == "auto":
        candidate = choice_path(checkpoint)
        path = candidate if candidate.is_file() else None
    elif postprocess_from not in (None, "none"):
        path = Path(postprocess_from)
        if not path.is_file():
            raise ConfigError(f"--postprocess {path}: no such file")
    base = load_choice(path).rule if path is not None else MaskRule()
    post = dataclasses.replace(base.postprocess, **{k: v for k, v in given.items() if k != "threshold"})
    rule = MaskRule(given.get("threshold", base.threshold), post)
    if path is None:
        return rule, "options" if given else "defaults"
    overridden = ", ".join("--" + name.replace("_", "-") for name in sorted(given))
    return rule, f"{path}" + (f", overridden by {overridden}" if overridden else "")
