"""The metadata an exported ONNX file carries beside its graph (``buildings export`` writes it, the
ONNX inference backend reads it): the one place its keys and their meaning are written.

Keys (each stored as ``buildings.<key>``, a string): ``num_classes`` (1 = one binary logit),
``model`` (the architecture's name), ``input`` (what the graph takes), ``mean`` / ``std`` (the
normalisation the graph expects, JSON lists; must be the package's own), ``peak_bytes_per_pixel``
and ``largest_per_pixel`` (activation memory per input pixel, measured on the Keras model at
export; it sizes prediction batches), ``source`` (the checkpoint's file name).
"""

from __future__ import annotations

import json
import math

import numpy as np

from buildings.errors import CheckpointError

__all__ = ["INPUT", "KEYS", "PREFIX", "decode", "encode"]

PREFIX = "buildings."
KEYS = ("num_classes", "model", "input", "mean", "std", "peak_bytes_per_pixel", "largest_per_pixel", "source")
INPUT = "NHWC float32 RGB"


def encode(values: dict) -> dict[str, str]:
    """``values`` (every key of :data:`KEYS`) as the file's string properties."""
    missing = set(KEYS) - set(values)
    if missing or set(values) - set(KEYS):
        raise ValueError(f"ONNX metadata needs exactly {KEYS}; missing {sorted(missing)}")
    return {PREFIX + key: json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
            for key, value in values.items()}


def decode(properties: dict[str, str], path) -> dict:
    """The checked values of a file's properties; one CheckpointError naming ``path`` and the key
    for a file ``buildings export`` did not write, or wrote for another normalisation."""
    from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD

    def value(key, parse):
        try:
            return parse(properties[PREFIX + key])
        except KeyError:
            raise CheckpointError(f"{path}: an ONNX model without the metadata `buildings export` writes "
                                  f"(no {PREFIX + key}); export it with `buildings export`") from None
        except (TypeError, ValueError):
            raise CheckpointError(f"{path}: ONNX metadata {PREFIX + key}={properties[PREFIX + key][:80]!r} "
                                  "is not valid") from None

    out = {"num_classes": value("num_classes", int), "model": properties.get(PREFIX + "model", ""),
           "mean": value("mean", json.loads), "std": value("std", json.loads),
           "peak_bytes_per_pixel": value("peak_bytes_per_pixel", float),
           "largest_per_pixel": value("largest_per_pixel", float)}
    if not 1 <= out["num_classes"] <= 255:
        raise CheckpointError(f"{path}: ONNX metadata num_classes={out['num_classes']} is not 1..255")
    for key, expected in (("mean", IMAGENET_MEAN), ("std", IMAGENET_STD)):
        got = np.asarray(out[key], dtype=float) if isinstance(out[key], list) else np.zeros(0)
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-6):
            raise CheckpointError(f"{path}: ONNX metadata {key}={out[key]} is not the normalisation this "
                                  f"package feeds ({[round(float(v), 3) for v in expected]})")
    for key in ("peak_bytes_per_pixel", "largest_per_pixel"):
        if not (math.isfinite(out[key]) and out[key] > 0):
            raise CheckpointError(f"{path}: ONNX metadata {key}={out[key]} is not a positive number")
    return out
