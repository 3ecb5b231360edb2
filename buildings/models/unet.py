"""U-Net (Ronneberger et al. 2015), from scratch or on a keras.applications encoder.

From scratch (``encoder="none"``): ``depth`` down-sampling steps of two 3x3 conv + BatchNorm +
ReLU, ``filters`` doubling each step, and the mirror decoder (bilinear up-sampling, concatenation
with the skip, two conv). With an encoder: the encoder's stride 2..16 features are the skips and the
stride-32 features the bottleneck; the decoder has ``decoder_filters`` per level, as in
segmentation_models.pytorch.
"""

from __future__ import annotations

import keras
from keras import layers

from buildings.errors import ConfigError
from buildings.models.encoders import build_encoder
from buildings.models.layers import (
    Upsample,
    apply_decoder_attention,
    attention_gate,
    conv_block,
    segmentation_head,
)


def build_unet(*, num_classes: int = 1, encoder: str = "none", encoder_weights=None, filters: int = 64,
               depth: int = 4, decoder_filters=(256, 128, 64, 32, 16), decoder_attention: str = "none",
               attention_gates: bool = False, input_shape=(None, None, 3), name: str = "unet") -> keras.Model:
    """Build a U-Net returning logits.

    Args:
        num_classes: 1 for one binary logit, N for N class logits.
        encoder: ``"none"`` (from scratch) or a key of ``buildings.models.encoders.ENCODERS``.
        encoder_weights: None, ``"imagenet"`` or a local weights file (encoder only).
        filters: from scratch, channels of the first level (doubled at each level down).
        depth: from scratch, number of down-sampling steps (1..5; inputs must divide by 2**depth).
        decoder_filters: with an encoder, decoder channels from the coarsest level up.
        decoder_attention: ``"none"``, ``"se"`` or ``"cbam"`` after each decoder block.
        attention_gates: additive attention gates on the skips (Attention U-Net).
        input_shape: (height, width, 3); None dimensions accept any multiple of 32.

    Example:
        >>> model = build_unet(filters=16, depth=3)
        >>> model(np.zeros((1, 64, 64, 3), "float32")).shape   # (1, 64, 64, 1) logits
    """
    inputs = keras.Input(input_shape, name="image")
    if encoder in (None, "none"):
        if not 1 <= depth <= 5:
            raise ConfigError(f"depth must be 1..5, got {depth}")
        skips = []
        x = inputs
        for level in range(depth):
            x = conv_block(x, filters * 2**level, name=f"enc{level}")
            skips.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{level}")(x)
        x = conv_block(x, filters * 2**depth, name="bottleneck")
        for level in reversed(range(depth)):
            x = _decoder_step(x, skips[level], filters * 2**level, attention_gates, decoder_attention,
                              name=f"dec{level}")
    else:
        features = build_encoder(inputs, encoder, weights=encoder_weights).features
        x = features[32]
        for i, stride in enumerate((16, 8, 4, 2, 1)):
            skip = features.get(stride)
            x = _decoder_step(x, skip, decoder_filters[i], attention_gates, decoder_attention,
                              name=f"dec_s{stride}")
    outputs = segmentation_head(x, num_classes, kernel_size=1 if encoder in (None, "none") else 3)
    return keras.Model(inputs, outputs, name=name)


def _decoder_step(x, skip, filters, gates, attention, *, name):
    gating = x
    x = Upsample(2, name=f"{name}_up")(x)
    if skip is not None:
        if gates:
            skip = attention_gate(skip, gating, inter_channels=max(skip.shape[-1] // 2, 8), name=f"{name}_gate")
        x = layers.Concatenate(name=f"{name}_concat")([x, skip])
    x = conv_block(x, filters, name=name)
    return apply_decoder_attention(x, attention, name=name)
