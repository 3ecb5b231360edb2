"""Inference, along the way a prediction goes:

* ``backends``     what computes probabilities: a Keras model on its device, or an exported ONNX file
                   (onnxruntime, no Keras), behind one protocol; ``load_checkpoints`` opens them;
* ``predictor``    probabilities for images of any size: TTA, ensembles, seamless tiling;
* ``prediction``   THE probability → mask rule (``MaskRule``: threshold, min-area, holes, gates) and
                   the tuned rule of postprocess.json (``Choice``, ``resolve_rule``);
* ``writers``      the outputs, as context managers: RLE submission, result.zip, mask / overlay PNGs;
* ``predict``      ``write_predictions``: images → predictor → rule → writers;
* ``evaluation``   scores on a labelled split (contest Dice, mIoU, threshold sweep, worst-image gallery);
* ``tuning``       the rule's threshold, min-area, hole filling and gates searched jointly.

Names are loaded on first use (``from buildings.inference import Predictor``).
"""

from __future__ import annotations

import importlib

_HOMES = {"load_checkpoints": "backends", "InferenceBackend": "backends", "KerasBackend": "backends",
          "OnnxBackend": "backends", "Predictor": "predictor",
          "MaskRule": "prediction", "Postprocess": "prediction", "Choice": "prediction",
          "choice_path": "prediction", "load_choice": "prediction", "save_choice": "prediction",
          "resolve_rule": "prediction", "fill_holes": "prediction", "remove_small_components": "prediction",
          "write_predictions": "predict", "PredictionReport": "predict", "open_writers": "writers",
          "evaluate": "evaluation", "Evaluation": "evaluation", "DEFAULT_THRESHOLDS": "evaluation",
          "tune_postprocess": "tuning"}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"buildings.inference.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'buildings.inference' has no attribute {name!r}")
