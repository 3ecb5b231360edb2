"""Models: shapes at several sizes, logits, save / load, options. Backend-neutral (see test_backends)."""

import functools

import keras
import numpy as np
import pytest
from helpers import to_numpy

import buildings  # noqa: F401
from buildings.errors import ConfigError
from buildings.models import ENCODERS, build_model, get_encoder, load_model
from buildings.models.encoders import build_encoder

SMALL = {
    "unet": {"filters": 8, "depth": 5},
    "attunet": {"filters": 8, "depth": 5},
    "deeplabv3plus": {},
    "fcn": {},
}
# Square and both non-square orientations. Small: jax compiles every op for each new input shape
# (tests/test_backends.py runs this file under jax), and (64, 96) is the shape the logits test below
# gives the same models, compiled once for both.
SIZES = [(256, 256), (64, 96), (160, 96)]


@functools.cache
def small_model(name: str):
    """One binary model of SMALL per name, built once per process (a ResNet50 build alone is many
    seconds under jax, which runs every initializer op by op); the tests that use it leave it as built."""
    return build_model(name, num_classes=1, **SMALL[name])


@pytest.fixture(scope="module", params=list(SMALL))
def model_name_and_model(request):
    return request.param, small_model(request.param)


def test_output_shapes_at_several_sizes(model_name_and_model):
    name, model = model_name_and_model
    for height, width in SIZES:
        x = np.random.default_rng(0).normal(size=(1, height, width, 3)).astype("float32")
        y = to_numpy(model(x, training=False))
        assert y.shape == (1, height, width, 1), (name, height, width)
        assert np.isfinite(y).all()
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"


def test_outputs_are_logits_not_probabilities(model_name_and_model):
    """With the head's last convolution set to output a constant c, the model outputs exactly c
    everywhere, for c outside [0, 1] too: nothing (sigmoid, softmax, clipping) follows the head."""
    name, model = model_name_and_model
    head = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    saved = [to_numpy(w) for w in head.weights]
    x = np.random.default_rng(2).normal(size=(1, 64, 96, 3)).astype("float32")
    try:
        for c in (-4.0, 7.5):
            head.set_weights([np.zeros_like(saved[0]), np.full_like(saved[1], c)])
            y = to_numpy(model(x, training=False))
            np.testing.assert_allclose(y, c, atol=1e-5, err_msg=name)
    finally:
        head.set_weights(saved)


@pytest.mark.parametrize("name", list(SMALL))
def test_num_classes_gives_that_many_logits_and_a_keras_save_load_round_trip(name, tmp_path):
    """num_classes=3 gives 3 logits a pixel, and the model (with CBAM decoder attention) saves and
    loads to the same outputs: one build per model for both (each build is seconds under jax)."""
    model = build_model(name, num_classes=3, decoder_attention="cbam", **SMALL[name])
    # small: under jax every op is compiled for each new input shape
    x = np.random.default_rng(1).normal(size=(2, 64, 96, 3)).astype("float32")
    before = to_numpy(model(x, training=False))
    assert before.shape == (2, 64, 96, 3)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(to_numpy(loaded(x, training=False)), before, atol=1e-5)


@pytest.mark.parametrize("encoder", ["resnet50", "efficientnetv2b0", "mobilenetv3large"])
def test_encoder_taps_are_named_by_stride(encoder):
    """Each tap's resolution is the input's divided by its stride, read from the graph's shapes on a
    128x96 input: Keras infers them by tracing every layer's call on that shape (no pixels pushed
    through, which under jax compiles every op of the encoder; the models above run real inputs)."""
    inputs = keras.Input((128, 96, 3))
    features = build_encoder(inputs, encoder).features
    assert set(features) >= {4, 8, 16, 32}
    for stride in sorted(features):
        assert tuple(features[stride].shape[1:3]) == (128 // stride, 96 // stride), stride


@pytest.mark.parametrize("attention", ["none", "se", "cbam"])
def test_unet_with_encoder_and_decoder_attention(attention):
    # (MobileNetV3Small is built in test_encoder_weights_from_a_local_file)
    model = build_model("unet", encoder="mobilenetv3large", decoder_attention=attention)
    assert tuple(model(np.zeros((1, 128, 96, 3), "float32")).shape) == (1, 128, 96, 1)
    names = {layer.name for layer in model.layers}
    assert any(attention in n for n in names) == (attention != "none")


def test_deeplab_output_stride_16_dilates_the_last_stage():
    model = small_model("deeplabv3plus")  # SMALL's options are its defaults
    assert SMALL["deeplabv3plus"] == {}
    encoder = get_encoder(model)
    assert encoder.name == "encoder" and get_encoder(build_model("unet", filters=4, depth=1)) is None
    assert encoder.get_layer("conv5_block2_2_conv").dilation_rate == (2, 2)
    assert encoder.get_layer("conv5_block1_1_conv").strides == (1, 1)
    assert encoder.get_layer("conv4_block1_1_conv").strides == (2, 2)
    rates = sorted(layer.dilation_rate[0] for layer in model.layers if layer.name.startswith("aspp_rate") and layer.name.endswith("_conv"))
    assert rates == [6, 12, 18]


def test_encoder_weights_from_a_local_file(tmp_path):
    source = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(None, None, 3))
    path = tmp_path / "encoder.weights.h5"
    source.save_weights(path)
    model = build_model("unet", encoder="mobilenetv3small", encoder_weights=str(path))
    encoder = get_encoder(model)
    for a, b in zip(source.weights, encoder.weights[: len(source.weights)], strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    with pytest.raises(ConfigError, match="not found"):
        build_model("unet", encoder="resnet50", encoder_weights=str(tmp_path / "missing.h5"))


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("segformer")
    with pytest.raises(ConfigError, match="does not take 'output_stride'"):
        build_model("unet", output_stride=8)
    with pytest.raises(ConfigError, match=r"option filters='wide': expected int"):
        build_model("unet", filters="wide")
    with pytest.raises(ConfigError, match="unknown encoder"):
        build_model("unet", encoder="resnet9000")
    with pytest.raises(ConfigError, match="needs a ResNet or EfficientNet-Lite encoder"):
        build_model("deeplabv3plus", encoder="mobilenetv3small")
    with pytest.raises(ConfigError, match="decoder_attention"):
        build_model("unet", filters=4, depth=1, decoder_attention="transformer")
    assert "resnet50" in ENCODERS


@pytest.mark.parametrize("name", list(SMALL))
def test_an_unknown_model_option_is_refused_listing_what_a_user_can_set(name):
    # The list is what --model-option takes: the documented names (decoder_attention), never the
    # builder's internal keywords (input_shape, name) nor an older spelling.
    with pytest.raises(ConfigError) as refused:
        build_model(name, decoder_attn="cbam")
    message = str(refused.value)
    assert message.startswith(f"{name} does not take 'decoder_attn'; it takes "), message
    listed = set(message.split("; it takes ", 1)[1].split(", "))
    assert "decoder_attention" in listed and "num_classes" in listed and "encoder" in listed, listed
    assert not listed & {"input_shape", "name", "decoder_attention_type", "classes"}, listed


def test_decoder_attention_is_the_one_name_and_an_old_config_still_builds():
    import inspect

    from buildings.models import MODELS

    for name, builder in MODELS.items():
        assert "decoder_attention" in inspect.signature(builder).parameters, name
    new = build_model("unet", filters=4, depth=2, decoder_attention="se")
    old = build_model("unet", filters=4, depth=2, decoder_attention_type="se")  # a config.json from before
    assert new.count_params() == old.count_params() > build_model("unet", filters=4, depth=2).count_params()


def test_mixed_precision_keeps_float32_logits():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("unet", filters=4, depth=2)
        y = model(np.zeros((1, 32, 32, 3), "float32"))
        assert keras.backend.standardize_dtype(y.dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
