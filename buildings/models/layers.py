"""Shared building blocks: conv blocks, attention gates, squeeze-excitation, CBAM, ASPP.

Blocks are functions that add standard Keras layers to a functional graph, so models serialise
as plain functional configs. Two tiny custom layers cover what no built-in layer does with a
dynamic spatial size (resize to another tensor's size, pool across channels); both are registered
for ``.keras`` save / load on every backend.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from buildings.errors import ConfigError

__all__ = [
    "ChannelPool",
    "ResizeLike",
    "Upsample",
    "aspp",
    "attention_gate",
    "cbam",
    "conv_bn_relu",
    "conv_block",
    "apply_decoder_attention",
    "segmentation_head",
    "squeeze_excitation",
]


def _resize(images, size, interpolation: str = "bilinear"):
    """``keras.ops.image.resize`` to a size known only at run time.

    Keras checks ``size[0] <= 0`` in Python, which a symbolic size cannot answer inside a compiled
    TensorFlow function (any-size inputs in ``predict``); there, call ``tf.image.resize`` directly.
    """
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.image.resize(images, size, method=interpolation)
    return ops.image.resize(images, size, interpolation=interpolation)


@keras.saving.register_keras_serializable(package="buildings")
class ResizeLike(layers.Layer):
    """Resize the first input to the spatial size of the second (channels_last), bilinear."""

    def __init__(self, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.interpolation = interpolation

    def call(self, inputs):
        source, reference = inputs
        shape = ops.shape(reference)
        return _resize(source, (shape[1], shape[2]), self.interpolation)

    def compute_output_shape(self, input_shapes):
        source, reference = input_shapes
        return (source[0], reference[1], reference[2], source[3])

    def get_config(self):
        return {**super().get_config(), "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package="buildings")
class Upsample(layers.Layer):
    """Bilinear upsampling by an integer ``factor`` that works with unknown spatial sizes.

    ``keras.layers.UpSampling2D(interpolation="bilinear")`` computes the new size from the static
    shape, which fails inside a compiled TensorFlow predict on inputs of any size; this reads the
    size at run time (``ops.shape``), identically on every backend.
    """

    def __init__(self, factor: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)

    def call(self, inputs):
        shape = ops.shape(inputs)
        return _resize(inputs, (shape[1] * self.factor, shape[2] * self.factor))

    def compute_output_shape(self, input_shape):
        scale = [None if d is None else d * self.factor for d in input_shape[1:3]]
        return (input_shape[0], *scale, input_shape[3])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="buildings")
class ChannelPool(layers.Layer):
    """Mean and max over channels, stacked: (B, H, W, C) → (B, H, W, 2) (CBAM's spatial input)."""

    def call(self, inputs):
        return ops.concatenate(
            [ops.mean(inputs, axis=-1, keepdims=True), ops.max(inputs, axis=-1, keepdims=True)], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


def batch_norm(*, name: str):
    """BatchNormalization with momentum 0.9 (PyTorch's 0.1): Keras's 0.99 leaves the moving
    statistics far from the data after the few hundred steps of a short run, and validation then
    sees garbage."""
    return layers.BatchNormalization(momentum=0.9, name=name)


def conv_bn_relu(x, filters: int, kernel_size: int = 3, *, dilation: int = 1, name: str):
    x = layers.Conv2D(filters, kernel_size, padding="same", dilation_rate=dilation, use_bias=False,
                      name=f"{name}_conv")(x)
    x = batch_norm(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def conv_block(x, filters: int, *, name: str):
    """Two 3x3 conv + BatchNorm + ReLU (the U-Net block)."""
    x = conv_bn_relu(x, filters, name=f"{name}_1")
    return conv_bn_relu(x, filters, name=f"{name}_2")


def squeeze_excitation(x, *, ratio: int = 16, name: str):
    """Squeeze-and-excitation (Hu et al.): channel weights from global average pooling."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_squeeze")(x)
    s = layers.Conv2D(max(channels // ratio, 4), 1, activation="relu", name=f"{name}_reduce")(s)
    s = layers.Conv2D(channels, 1, activation="sigmoid", name=f"{name}_expand")(s)
    return layers.Multiply(name=f"{name}_scale")([x, s])


def cbam(x, *, ratio: int = 16, kernel_size: int = 7, name: str):
    """CBAM (Woo et al.): channel attention from avg+max pooling, then spatial attention."""
    channels = x.shape[-1]
    hidden = layers.Conv2D(max(channels // ratio, 4), 1, activation="relu", name=f"{name}_mlp_1")
    out = layers.Conv2D(channels, 1, name=f"{name}_mlp_2")
    avg = out(hidden(layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_avg")(x)))
    mx = out(hidden(layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_max")(x)))
    channel = layers.Activation("sigmoid", name=f"{name}_channel_gate")(layers.Add(name=f"{name}_sum")([avg, mx]))
    x = layers.Multiply(name=f"{name}_channel_scale")([x, channel])
    spatial = ChannelPool(name=f"{name}_channel_pool")(x)
    spatial = layers.Conv2D(1, kernel_size, padding="same", activation="sigmoid", name=f"{name}_spatial_gate")(spatial)
    return layers.Multiply(name=f"{name}_spatial_scale")([x, spatial])


def apply_decoder_attention(x, kind: str | None, *, name: str):
    """Apply the decoder attention chosen by the model option ``decoder_attention`` (none / se / cbam)."""
    if kind in (None, "none"):
        return x
    if kind == "se":
        return squeeze_excitation(x, name=f"{name}_se")
    if kind == "cbam":
        return cbam(x, name=f"{name}_cbam")
    raise ConfigError(f"decoder_attention must be 'none', 'se' or 'cbam', got {kind!r}")


def attention_gate(skip, gating, *, inter_channels: int, name: str):
    """Additive attention gate (Oktay et al., Attention U-Net).

    ``gating`` is the coarser decoder signal (half the resolution of ``skip``); it is upsampled,
    both are projected to ``inter_channels``, and a sigmoid map in [0, 1] rescales ``skip``.
    """
    g = Upsample(2, name=f"{name}_up")(gating)
    g = layers.Conv2D(inter_channels, 1, use_bias=True, name=f"{name}_wg")(g)
    g = batch_norm(name=f"{name}_wg_bn")(g)
    x = layers.Conv2D(inter_channels, 1, use_bias=False, name=f"{name}_wx")(skip)
    x = batch_norm(name=f"{name}_wx_bn")(x)
    a = layers.Activation("relu", name=f"{name}_relu")(layers.Add(name=f"{name}_add")([g, x]))
    a = layers.Conv2D(1, 1, name=f"{name}_psi")(a)
    a = batch_norm(name=f"{name}_psi_bn")(a)
    a = layers.Activation("sigmoid", name=f"{name}_alpha")(a)
    return layers.Multiply(name=f"{name}_gated")([skip, a])


def aspp(x, *, filters: int = 256, rates=(6, 12, 18), dropout: float = 0.1, name: str = "aspp"):
    """Atrous spatial pyramid pooling (DeepLabV3): 1x1, three dilated 3x3 and image pooling."""
    branches = [conv_bn_relu(x, filters, 1, name=f"{name}_1x1")]
    for rate in rates:
        branches.append(conv_bn_relu(x, filters, 3, dilation=rate, name=f"{name}_rate{rate}"))
    pooled = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_image_pool")(x)
    pooled = conv_bn_relu(pooled, filters, 1, name=f"{name}_pool")
    branches.append(ResizeLike(name=f"{name}_pool_resize")([pooled, x]))
    y = layers.Concatenate(name=f"{name}_concat")(branches)
    y = conv_bn_relu(y, filters, 1, name=f"{name}_project")
    return layers.Dropout(dropout, name=f"{name}_dropout")(y) if dropout else y


def segmentation_head(x, num_classes: int, *, kernel_size: int = 1, name: str = "head"):
    """Logits: ``num_classes`` channels (1 = one binary logit), float32 even under mixed precision."""
    if num_classes < 1:
        raise ConfigError(f"num_classes must be at least 1, got {num_classes}")
    x = layers.Conv2D(num_classes, kernel_size, padding="same", name=f"{name}_conv")(x)
    return layers.Activation("linear", dtype="float32", name="logits")(x)
