"""DeepLabV3+ (Chen et al. 2018) on a keras.applications ResNet.

Encoder at output stride 16 (the last stage dilated, rate 2, instead of strided), ASPP with rates
6/12/18 plus image pooling (256 channels), decoder that upsamples ASPP 4x, concatenates the
stride-4 features projected to 48 channels, applies two 3x3 conv (256), then the head and a final
4x upsampling to the input size.
"""

from __future__ import annotations

import keras
from keras import layers

from buildings.models.encoders import build_encoder
from buildings.models.layers import (
    ResizeLike,
    Upsample,
    apply_decoder_attention,
    aspp,
    conv_bn_relu,
    segmentation_head,
)


def build_deeplabv3plus(*, num_classes: int = 1, encoder: str = "resnet50", encoder_weights=None,
                        output_stride: int = 16, aspp_rates=(6, 12, 18), aspp_filters: int = 256,
                        low_level_filters: int = 48, decoder_attention: str = "none",
                        input_shape=(None, None, 3), name: str = "deeplabv3plus") -> keras.Model:
    """Build DeepLabV3+ returning logits at the input resolution.

    Args:
        num_classes: 1 for one binary logit, N for N class logits.
        encoder: a ResNet (``resnet50``, ``resnet101``, ``resnet152``) or EfficientNet-Lite key of ``ENCODERS``
            (dilated to ``output_stride``).
        encoder_weights: None, ``"imagenet"`` or a local weights file.
        output_stride: 16 (default) or 8; rates are doubled at 8, as in the paper.
        decoder_attention: ``"none"``, ``"se"`` or ``"cbam"`` on the decoder output.
    """
    inputs = keras.Input(input_shape, name="image")
    features = build_encoder(inputs, encoder, weights=encoder_weights, output_stride=output_stride).features
    rates = tuple(r * (16 // output_stride) for r in aspp_rates)
    x = aspp(features[output_stride], filters=aspp_filters, rates=rates)
    low = conv_bn_relu(features[4], low_level_filters, 1, name="low_level_project")
    x = ResizeLike(name="aspp_up")([x, low])
    x = layers.Concatenate(name="decoder_concat")([x, low])
    x = conv_bn_relu(x, 256, name="decoder_1")
    x = conv_bn_relu(x, 256, name="decoder_2")
    x = apply_decoder_attention(x, decoder_attention, name="decoder")
    x = Upsample(4, name="final_up")(x)
    return keras.Model(inputs, segmentation_head(x, num_classes), name=name)
