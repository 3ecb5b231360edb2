"""Segmentation models in plain Keras 3 (channels_last, logits out), by name.

    >>> from buildings.models import build_model, get_encoder
    >>> model = build_model("attunet", filters=32)
    >>> model = build_model("deeplabv3plus", encoder="resnet50", encoder_weights="imagenet")
    >>> get_encoder(model).trainable = False          # freeze the backbone

**Contract of every model built here** (what training, inference and export rely on):

* input ``image``: ImageNet-normalised RGB (``buildings.preprocessing``), channels_last, any
  height and width that are multiples of 32;
* output: float32 **logits**, one channel per class (1 = one binary logit), at the input size;
* a model built on a pretrained-style backbone holds it as one sub-model named ``encoder``
  (:data:`ENCODER_NAME`, found with :func:`get_encoder`); its outputs are the features by stride.
  Models without one (``unet`` from scratch) have no such layer.

Options are checked in one place, :func:`resolve_options`: unknown names and values of the wrong
type are refused with a :class:`~buildings.errors.ConfigError` naming them, before anything is built.

Why not keras-cv / keras-hub: keras-cv cannot be imported without TensorFlow, its
``DeepLabV3Plus(num_classes=1)`` applies a softmax (the output is constantly 1) and its presets
download from Kaggle; keras-hub drags in full TensorFlow. Everything here is keras.layers,
keras.ops and keras.applications, which run on torch, jax and tensorflow alike.
"""

from __future__ import annotations

import inspect

import keras

from buildings.config import ARCHITECTURES
from buildings.errors import CheckpointError, ConfigError
from buildings.models.attunet import build_attunet
from buildings.models.deeplabv3plus import build_deeplabv3plus
from buildings.models.encoders import ENCODER_NAME, ENCODERS
from buildings.models.fcn import build_fcn
from buildings.models.unet import build_unet

__all__ = ["ENCODERS", "ENCODER_NAME", "INTERNAL_OPTIONS", "MODELS", "build_model", "get_encoder", "load_model",
           "model_options", "resolve_options", "set_encoder_trainable"]

MODELS = dict(zip(ARCHITECTURES, (build_unet, build_attunet, build_deeplabv3plus, build_fcn), strict=True))

# Older spellings still read (a run's config.json keeps the options as they were typed), never listed.
_ALIASES = {"decoder_attention_type": "decoder_attention", "classes": "num_classes"}
# Builder keywords the package sets itself: accepted from code, never offered as a model option.
INTERNAL_OPTIONS = ("input_shape", "name")


def canonical_name(name: str) -> str:
    """``Attention-UNet``-style spellings → the registry key; unknown names are refused."""
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    return key


def model_options(name: str, *, internal: bool = True) -> dict:
    """The keyword options of model ``name`` with their defaults; ``internal=False``: only those a
    user sets (``--model-option``, or their own flags such as ``--encoder``), without
    :data:`INTERNAL_OPTIONS`."""
    builder = MODELS[canonical_name(name)]
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()
            if internal or p.name not in INTERNAL_OPTIONS}


def _check_type(model: str, key: str, value, default) -> None:
    if value is None or default is None:
        return  # None means "the default" / "none"; an option whose default is None takes any type
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{model} option {key}={value!r}: expected {type(default).__name__} like the default "
                          f"{default!r}")


def resolve_options(name: str, **options) -> dict:
    """Options for model ``name`` with older spellings resolved (``decoder_attention_type`` for
    ``decoder_attention``, ``classes`` for ``num_classes``); unknown names and values whose type
    differs from the default's raise :class:`ConfigError` naming them and the options a user can
    set (not :data:`INTERNAL_OPTIONS`)."""
    key = canonical_name(name)
    accepted = model_options(key)
    resolved = {}
    for option, value in options.items():
        option = _ALIASES.get(option, option)
        if option not in accepted:
            settable = ", ".join(sorted(model_options(key, internal=False)))
            raise ConfigError(f"{key} does not take {option!r}; it takes {settable}")
        _check_type(key, option, value, accepted[option])
        resolved[option] = value
    return resolved


def build_model(name: str, **options) -> keras.Model:
    """Build model ``name`` (``unet``, ``attunet``, ``deeplabv3plus``, ``fcn``) with ``options``
    (see :func:`resolve_options` and each builder's docstring). Saving it (``model.save``) does not
    import TensorFlow on the torch or jax backend (``runtime.lazy_tensorflow``)."""
    from buildings.runtime import lazy_tensorflow

    lazy_tensorflow.install()
    return MODELS[canonical_name(name)](**resolve_options(name, **options))


def get_encoder(model: keras.Model) -> keras.Model | None:
    """The model's backbone (the sub-model named :data:`ENCODER_NAME`), or None if it has none."""
    for layer in model.layers:
        if layer.name == ENCODER_NAME and isinstance(layer, keras.Model):
            return layer
    return None


def set_encoder_trainable(encoder: keras.Model, trainable: bool) -> None:
    """Freeze or unfreeze a backbone for fine-tuning. Unfrozen, its BatchNormalization layers stay
    frozen, in inference mode: the decoder learned on the features the pretrained moving statistics
    give, and switching them to batch statistics (small batches of another domain) moves every
    feature at once (Keras's transfer-learning guide does the same)."""
    encoder.trainable = trainable
    if trainable:
        for layer in _all_layers(encoder):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def load_model(path, *, compile: bool = True) -> keras.Model:
    """Load a ``.keras`` checkpoint of any backend. ``keras.saving.load_model`` works as well once
    ``buildings`` is imported (it registers this package's layers, losses and metrics); this adds a
    :class:`CheckpointError` naming the file when it is missing or not a Keras model."""
    from pathlib import Path

    import buildings.losses  # noqa: F401  (registered on import; explicit for readers)
    import buildings.metrics  # noqa: F401
    from buildings.runtime import lazy_tensorflow

    lazy_tensorflow.install()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as err:  # Keras raises many kinds for a file that is not a model
        raise CheckpointError(f"{path}: not a loadable .keras model ({type(err).__name__}: {err})") from None
