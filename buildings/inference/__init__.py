"""Inference, along the way a prediction goes:

* ``checkpoints``  load ``.keras`` checkpoints of any backend, checked to be segmentation models;
* ``predictor``    probabilities for images of any size: TTA, ensembles, seamless tiling;
* ``postprocess``  min-area and hole filling of building masks;
* ``writers``      the outputs, as context managers: RLE submission, result.zip, mask / overlay PNGs;
* ``predict``      ``write_predictions``: images → predictor → post-processing → writers;
* ``evaluation``   scores on a labelled split (contest Dice, mIoU, threshold sweep, worst-image gallery);
* ``tuning``       threshold, min-area, hole filling and empty-tile gate tuned jointly (postprocess.json).

Names are loaded on first use (``from buildings.inference import Predictor``).
"""

from __future__ import annotations

import importlib

__all__ = ["DEFAULT_THRESHOLDS", "Choice", "Evaluation", "Postprocess", "PredictionReport", "Predictor",
           "choice_path", "evaluate", "load_checkpoints", "load_choice", "save_choice", "tune_postprocess",
           "write_predictions"]

_HOMES = {"load_checkpoints": "checkpoints", "Predictor": "predictor", "tta_transforms": "predictor",
          "Postprocess": "postprocess", "fill_holes": "postprocess", "remove_small_components": "postprocess",
          "write_predictions": "predict", "PredictionReport": "predict", "open_writers": "writers",
          "evaluate": "evaluation", "Evaluation": "evaluation", "DEFAULT_THRESHOLDS": "evaluation",
          "tune_postprocess": "tuning", "Choice": "tuning", "load_choice": "tuning", "save_choice": "tuning",
          "choice_path": "tuning"}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"buildings.inference.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'buildings.inference' has no attribute {name!r}")
