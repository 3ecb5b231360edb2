"""Segmentation models in plain Keras 3 (channels_last, logits out), by name.

    >>> from buildings.models import build_model
    >>> model = build_model("attunet", filters=32)
    >>> model = build_model("deeplabv3plus", encoder="resnet50", encoder_weights="imagenet")

Why not keras-cv / keras-hub: keras-cv cannot be imported without TensorFlow, its
``DeepLabV3Plus(num_classes=1)`` applies a softmax (the output is constantly 1) and its presets
download from Kaggle; keras-hub drags in full TensorFlow. Everything here is keras.layers,
keras.ops and keras.applications, which run on torch, jax and tensorflow alike.
"""

from __future__ import annotations

import inspect

import keras

from buildings.models import layers as _layers  # noqa: F401  (registers custom layers for loading)
from buildings.models import torch_speedups
from buildings.models.attunet import build_attunet
from buildings.models.deeplabv3plus import build_deeplabv3plus
from buildings.models.encoders import ENCODERS
from buildings.models.fcn import build_fcn
from buildings.models.unet import build_unet

__all__ = ["ENCODERS", "MODELS", "build_model", "load_model", "model_options"]

MODELS = {
    "unet": build_unet,
    "attunet": build_attunet,
    "deeplabv3plus": build_deeplabv3plus,
    "fcn": build_fcn,
}

_ALIASES = {"decoder_attention": "decoder_attention_type", "classes": "num_classes"}


def model_options(name: str) -> dict:
    """The keyword options of model ``name`` with their defaults."""
    builder = MODELS[name]
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()}


def build_model(name: str, **options) -> keras.Model:
    """Build model ``name`` (``unet``, ``attunet``, ``deeplabv3plus``, ``fcn``) with ``options``.

    Options not accepted by that model raise a ``TypeError`` naming them and the accepted ones.
    ``decoder_attention`` is accepted as a synonym of ``decoder_attention_type``.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    options = {_ALIASES.get(k, k): v for k, v in options.items()}
    accepted = model_options(key)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"{key} does not take {unknown}; it takes {sorted(accepted)}")
    torch_speedups.install()  # no-op off torch; see torch_speedups for what and why
    return MODELS[key](**options)


def load_model(path, *, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` checkpoint of any backend, with this package's layers, losses and metrics
    registered (``keras.models.load_model`` alone does not know them unless they were imported)."""
    import buildings.losses  # noqa: F401
    import buildings.metrics  # noqa: F401

    torch_speedups.install()
    return keras.models.load_model(path, compile=compile)
