"""buildings.runtime.torch_speedups computes what Keras computes: conv / pooling without copies and
the fused BatchNorm agree with Keras's own torch code (forward, gradients, moving statistics), and a
model trains to the same losses with them as without. Torch backend only."""

import keras
import numpy as np
import pytest

from buildings.runtime import torch_speedups

pytestmark = pytest.mark.skipif(keras.backend.backend() != "torch", reason="torch-backend substitutions")


@pytest.fixture
def speedups():
    """Run a test body with Keras as released (False) and with the substitutions (True); restore
    the package default afterwards."""

    def switch(on: bool):
        torch_speedups.uninstall()
        if on:
            assert torch_speedups.install()

    yield switch
    torch_speedups.uninstall()
    torch_speedups.install()


def forward_backward(layer_factory, x: np.ndarray, *, training=False):
    import torch

    keras.utils.set_random_seed(0)
    layer = layer_factory()
    inputs = torch.tensor(x, requires_grad=True)
    out = layer(inputs, training=training)
    weights = torch.sin(torch.arange(out.numel(), dtype=torch.float32)).reshape(out.shape)
    (out.float() * weights).sum().backward()
    grads = [v.value.grad.numpy().copy() for v in layer.trainable_variables]
    return out.detach().float().numpy(), inputs.grad.numpy(), grads, layer


CONV_LAYERS = {
    "conv3x3-same": lambda: keras.layers.Conv2D(8, 3, padding="same"),
    "conv3x3-stride2-same-odd": lambda: keras.layers.Conv2D(8, 3, strides=2, padding="same"),
    "conv4x4-stride2-same-asymmetric": lambda: keras.layers.Conv2D(8, 4, strides=2, padding="same"),
    "conv5x5-valid": lambda: keras.layers.Conv2D(8, 5),
    "conv-dilated": lambda: keras.layers.Conv2D(8, 3, padding="same", dilation_rate=3),
    "conv-groups": lambda: keras.layers.Conv2D(8, 3, padding="same", groups=2),
    "depthwise": lambda: keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2),
    "separable": lambda: keras.layers.SeparableConv2D(8, 3, padding="same"),
    "maxpool-3-stride2-same": lambda: keras.layers.MaxPooling2D(3, strides=2, padding="same"),
    "maxpool-2": lambda: keras.layers.MaxPooling2D(2),
    "avgpool-3-same": lambda: keras.layers.AveragePooling2D(3, strides=1, padding="same"),
}


@pytest.mark.parametrize("name", list(CONV_LAYERS))
def test_conv_and_pooling_match_keras(name, speedups):
    x = np.random.default_rng(0).normal(size=(2, 33, 30, 4)).astype("float32")
    results = []
    for on in (False, True):
        speedups(on)
        results.append(forward_backward(CONV_LAYERS[name], x))
    (out_a, dx_a, grads_a, _), (out_b, dx_b, grads_b, _) = results
    assert out_a.shape == out_b.shape
    np.testing.assert_allclose(out_b, out_a, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(dx_b, dx_a, atol=1e-5, rtol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-5)


def test_channels_last_input_reaches_torch_without_a_copy(speedups):
    import torch

    speedups(True)
    x = torch.randn(2, 16, 16, 8)
    view = torch_speedups._channels_first_view(x)
    assert view.shape == (2, 8, 16, 16) and view.data_ptr() == x.data_ptr()
    assert view.is_contiguous(memory_format=torch.channels_last)
    out = keras.ops.conv(x, torch.randn(3, 3, 8, 4), padding="same")
    assert out.shape == (2, 16, 16, 4) and out.is_contiguous()  # NHWC out, no copy needed downstream


@pytest.mark.parametrize("shape", [(4, 32, 32, 16), (2, 1, 1, 16), (3, 5, 7, 6), (8, 5)],
                         ids=["feature-map", "two-values-per-channel", "odd", "dense"])
def test_batch_norm_matches_keras_in_training_and_inference(shape, speedups):
    import torch

    x = (np.random.default_rng(1).normal(size=shape) * 3 + 1).astype("float32")

    def factory():
        layer = keras.layers.BatchNormalization(momentum=0.9)
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 2.0, shape[-1]))
        layer.beta.assign(np.linspace(-1.0, 1.0, shape[-1]))
        return layer

    results = []
    for on in (False, True):
        speedups(on)
        out, dx, grads, layer = forward_backward(factory, x, training=True)
        for _ in range(2):  # further moving-average updates
            layer(torch.tensor(x * 0.5), training=True)
        inference = layer(torch.tensor(x), training=False).detach().numpy()
        results.append((out, dx, grads, layer.moving_mean.numpy(), layer.moving_variance.numpy(), inference))
    for a, b in zip(*results, strict=True):
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b], strict=True):
            np.testing.assert_allclose(v, u, atol=1e-4, rtol=1e-4)
    moving_variance = results[1][4]
    assert not np.allclose(moving_variance, 1.0)  # the moving statistics did move


def test_batch_norm_under_mixed_precision_keeps_float32_statistics(speedups):
    import torch

    x = np.random.default_rng(2).normal(size=(4, 8, 8, 6)).astype("float32") * 4 + 2
    results = []
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for on in (False, True):
            speedups(on)
            layer = keras.layers.BatchNormalization(momentum=0.9)
            out = layer(torch.tensor(x, dtype=torch.bfloat16), training=True)
            assert out.dtype == torch.bfloat16 and layer.moving_mean.dtype == "float32"
            results.append((out.float().detach().numpy(), layer.moving_mean.numpy(), layer.moving_variance.numpy()))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    np.testing.assert_allclose(results[1][0], results[0][0], atol=0.05)  # bf16 outputs: 8-bit mantissa
    np.testing.assert_allclose(results[1][1], results[0][1], atol=1e-2, rtol=1e-2)
    np.testing.assert_allclose(results[1][2], results[0][2], atol=1e-2, rtol=1e-2)


def test_unsupported_batch_norm_configurations_fall_back_to_keras(speedups):
    import torch

    x = np.random.default_rng(3).normal(size=(4, 6, 6, 5)).astype("float32")
    outs = []
    for on in (False, True):
        speedups(on)
        keras.utils.set_random_seed(0)
        renorm = keras.layers.BatchNormalization(renorm=True)
        channels_first = keras.layers.BatchNormalization(axis=1)
        outs.append([renorm(torch.tensor(x), training=True).detach().numpy(),
                     channels_first(torch.tensor(x), training=True).detach().numpy()])
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-5)


def test_a_model_trains_to_the_same_losses_with_and_without(speedups):
    from buildings.losses import get_loss
    from buildings.metrics import binary_metrics
    from buildings.models import build_model

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 64, 64, 3)).astype("float32")
    y = (rng.random((2, 64, 64, 1)) < 0.3).astype("float32")
    runs = []
    for on in (False, True):
        speedups(on)
        keras.utils.set_random_seed(0)
        model = build_model("attunet", filters=8, depth=3, decoder_attention="cbam")
        model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss=get_loss("bce_dice"), metrics=binary_metrics())
        losses = [float(model.train_on_batch(x, y)[0]) for _ in range(3)]
        runs.append((losses, np.asarray(model.predict_on_batch(x)),
                     [np.asarray(v.numpy()) for v in model.non_trainable_variables]))
    (losses_a, pred_a, stats_a), (losses_b, pred_b, stats_b) = runs
    np.testing.assert_allclose(losses_b, losses_a, rtol=1e-5)
    assert losses_a[-1] < losses_a[0]
    np.testing.assert_allclose(pred_b, pred_a, atol=1e-3)
    for a, b in zip(stats_a, stats_b, strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


def test_install_is_idempotent_reversible_and_can_be_switched_off(speedups, monkeypatch):
    from keras.src.backend.torch import nn as torch_nn

    speedups(False)
    original_pool, original_call = torch_nn.max_pool, keras.layers.BatchNormalization.call
    assert torch_speedups.installed() == {"copies": False, "batch_norm": False}
    assert torch_speedups.install(batch_norm=False) and torch_speedups.install(batch_norm=False)
    assert torch_speedups.installed() == {"copies": True, "batch_norm": False}
    assert keras.layers.BatchNormalization.call is original_call and torch_nn.max_pool is not original_pool
    replaced = torch_nn.max_pool
    assert torch_speedups.install() and torch_nn.max_pool is replaced  # not wrapped twice
    assert keras.layers.BatchNormalization.call is not original_call
    torch_speedups.uninstall()
    assert torch_nn.max_pool is original_pool and keras.layers.BatchNormalization.call is original_call
    monkeypatch.setenv("BUILDINGS_TORCH_SPEEDUPS", "0")
    assert not torch_speedups.install() and torch_speedups.installed() == {"copies": False, "batch_norm": False}


def test_unverified_keras_version_falls_back_with_one_logged_line(speedups, monkeypatch, caplog):
    from keras.src.backend.torch import nn as torch_nn

    speedups(False)
    original_conv = torch_nn.conv
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    monkeypatch.setattr(torch_speedups, "_logged", set())
    with caplog.at_level("WARNING", logger=torch_speedups.__name__):
        assert not torch_speedups.install() and not torch_speedups.install()
    assert torch_speedups.installed() == {"copies": False, "batch_norm": False}
    assert torch_nn.conv is original_conv
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "Keras 3.99.0 is outside the versions they were verified on" in lines[0]


def test_a_changed_private_signature_falls_back(speedups, monkeypatch, caplog):
    from keras.src.backend.torch import nn as torch_nn

    speedups(False)
    monkeypatch.setattr(torch_nn, "max_pool", lambda inputs, window, strides=None: inputs)
    monkeypatch.setattr(torch_speedups, "_logged", set())
    with caplog.at_level("WARNING", logger=torch_speedups.__name__):
        assert not torch_speedups.install()
    assert "keras.src.backend.torch.nn.max_pool is not the function they replace" in caplog.text
    assert torch_speedups.installed() == {"copies": False, "batch_norm": False}


def test_installed_where_work_starts_not_when_a_model_is_built_or_loaded(speedups, tmp_path):
    from buildings.inference import Predictor, load_checkpoints
    from buildings.models import build_model, load_model
    from buildings.runtime import patched

    speedups(False)
    model = build_model("unet", filters=4, depth=1)
    model.save(tmp_path / "m.keras")
    load_model(tmp_path / "m.keras")
    backends = load_checkpoints([tmp_path / "m.keras"])  # loading a checkpoint is no entry point
    assert torch_speedups.installed() == {"copies": False, "batch_norm": False}
    with patched() as active:  # for a block, then gone
        assert active["copies"] and torch_speedups.installed() == {"copies": True, "batch_norm": True}
    assert torch_speedups.installed() == {"copies": False, "batch_norm": False}
    Predictor(backends)  # where prediction starts
    assert torch_speedups.installed() == {"copies": True, "batch_norm": True}
