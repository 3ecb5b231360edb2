"""Attention U-Net (Oktay et al. 2018): a U-Net whose skip connections pass through additive
attention gates driven by the coarser decoder signal (``buildings.models.layers.attention_gate``)."""

from __future__ import annotations

import keras

from buildings.models.unet import build_unet


def build_attunet(*, num_classes: int = 1, encoder: str = "none", encoder_weights=None, filters: int = 64,
                  depth: int = 4, decoder_filters=(256, 128, 64, 32, 16), decoder_attention: str = "none",
                  input_shape=(None, None, 3), name: str = "attunet") -> keras.Model:
    """Build an Attention U-Net returning logits; arguments as :func:`build_unet`."""
    return build_unet(num_classes=num_classes, encoder=encoder, encoder_weights=encoder_weights,
                      filters=filters, depth=depth, decoder_filters=decoder_filters,
                      decoder_attention=decoder_attention, attention_gates=True,
                      input_shape=input_shape, name=name)
