"""FCN-ResNet50, the course baseline (torchvision's ``fcn_resnet50`` layout).

ResNet encoder with the last two stages dilated (output stride 8), an FCN head (3x3 conv to
in/4 = 512 channels, BatchNorm, ReLU, dropout 0.1, 1x1 conv to the classes) and bilinear
upsampling of the logits to the input size. Trained from scratch with 0.8·BCE + 0.2·Dice it is the
course's 0.8124 baseline.
"""

from __future__ import annotations

import keras
from keras import layers

from buildings.models.encoders import build_encoder
from buildings.models.layers import Upsample, apply_decoder_attention, conv_bn_relu, segmentation_head


def build_fcn(*, num_classes: int = 1, encoder: str = "resnet50", encoder_weights=None,
              output_stride: int = 8, decoder_attention: str = "none", dropout: float = 0.1,
              input_shape=(None, None, 3), name: str = "fcn") -> keras.Model:
    """Build FCN (ResNet encoder, dilated to ``output_stride``) returning logits at input size."""
    inputs = keras.Input(input_shape, name="image")
    features = build_encoder(inputs, encoder, weights=encoder_weights, output_stride=output_stride).features
    x = features[output_stride]
    x = conv_bn_relu(x, max(x.shape[-1] // 4, 16), name="fcn_head")
    x = apply_decoder_attention(x, decoder_attention, name="fcn_head")
    x = layers.Dropout(dropout, name="fcn_dropout")(x)
    x = segmentation_head(x, num_classes, name="fcn_classifier")
    x = Upsample(output_stride, name="fcn_up")(x)
    return keras.Model(inputs, layers.Activation("linear", dtype="float32", name="logits_up")(x), name=name)
