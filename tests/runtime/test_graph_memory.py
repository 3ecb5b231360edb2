"""buildings.runtime.graph_memory: functional models free each intermediate after its last use,
compute exactly what Keras's executor computes, and the activation estimate that sizes inference
batches counts what is alive at once."""

import gc
import weakref

import keras
import numpy as np
import pytest
from helpers import to_numpy

from buildings.models import build_model
from buildings.runtime import graph_memory


@pytest.fixture
def executor():
    """Run a test body with Keras's executor (False) or the releasing one (True); restore after."""

    def switch(on: bool):
        graph_memory.uninstall()
        if on:
            assert graph_memory.install()

    yield switch
    graph_memory.uninstall()


class Remember(keras.layers.Layer):
    """Passes its input through and keeps only a weak reference to it."""

    refs: list = []

    def call(self, x):
        Remember.refs.append(weakref.ref(x))
        return x * 1.0


class Check(keras.layers.Layer):
    """Records whether the tensors Remember saw are still alive when this layer runs."""

    alive: list = []

    def call(self, x):
        gc.collect()
        Check.alive.append([ref() is not None for ref in Remember.refs])
        return x


def chain():
    inputs = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    b = Remember()(a)  # b's input, a, has no other consumer: free once b ran
    c = keras.layers.Conv2D(4, 3, padding="same")(b)
    d = keras.layers.Conv2D(4, 3, padding="same")(c)
    return keras.Model(inputs, Check()(d))


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="eager tensors with weak references: torch")
@pytest.mark.parametrize("on", [False, True], ids=["keras-executor", "releasing-executor"])
def test_an_intermediate_is_freed_after_its_last_use_only_when_installed(executor, on):
    executor(on)
    model = chain()
    Remember.refs, Check.alive = [], []
    model(np.ones((1, 8, 8, 2), "float32"))
    assert Check.alive == [[not on]]  # Keras's executor keeps it to the end of the call; ours does not


@pytest.mark.parametrize("name, options", [("unet", {"filters": 4, "depth": 3, "decoder_attention": "cbam"}),
                                           ("attunet", {"filters": 4, "depth": 2}),
                                           ("deeplabv3plus", {"encoder": "resnet50"})])
def test_same_outputs_and_gradients_as_keras(executor, name, options):
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype("float32")
    y = (np.random.default_rng(1).random((2, 64, 64, 1)) < 0.3).astype("float32")
    runs = []
    for on in (False, True):
        executor(on)
        keras.utils.set_random_seed(0)
        model = build_model(name, **options)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
        before = to_numpy(model(x, training=False))
        loss = float(np.asarray(model.train_on_batch(x, y)))
        runs.append((before, loss, to_numpy(model(x, training=False))))
    (a0, la, a1), (b0, lb, b1) = runs
    np.testing.assert_array_equal(b0, a0)
    assert lb == pytest.approx(la, rel=1e-6)
    np.testing.assert_allclose(b1, a1, rtol=1e-5, atol=1e-5)  # the same update was applied


def test_activation_estimate_counts_what_is_alive_at_once():
    inputs = keras.Input((None, None, 3))
    a = keras.layers.Conv2D(8, 1)(inputs)  # 8 channels
    b = keras.layers.Conv2D(16, 1)(a)  # a dies after b
    c = keras.layers.Conv2D(4, 1)(b)
    model = keras.Model(inputs, c)
    pixels = 32 * 32 * 4  # float32 bytes per channel
    # alive at once, at most: input (3) + a (8) + b (16) channels while b is computed
    assert graph_memory.activation_bytes(model, 32, 32) == (3 + 8 + 16) * pixels
    skip = keras.Model(inputs, keras.layers.Concatenate()([c, a]))  # a kept for the end
    assert graph_memory.activation_bytes(skip, 32, 32) == (3 + 8 + 16 + 4) * pixels
    unet = build_model("unet", filters=8, depth=2)
    assert graph_memory.activation_bytes(unet, 128, 128) == 4 * graph_memory.activation_bytes(unet, 64, 64)


def test_batch_size_follows_the_budget():
    from buildings.runtime.device import batch_size_for

    model = build_model("unet", filters=8, depth=2)
    per_image = 1.5 * graph_memory.activation_bytes(model, 256, 256)
    assert batch_size_for([model], 256, 256, budget=int(5.5 * per_image)) == 5
    assert batch_size_for([model], 256, 256, budget=1) == 1
    assert batch_size_for([model], 256, 256, budget=10**15, most=12) == 12


def test_no_tensor_of_an_automatic_batch_reaches_int_max_elements(monkeypatch):
    """PyTorch's CUDA upsampling refuses 2**31 elements: DeepLabV3+ at 512² with batch 32 failed on
    an H100 (its 256-channel 512² upsampling output). The automatic batch stays under the limit."""
    from buildings.runtime import device

    model = build_model("unet", filters=8, depth=2)
    largest = graph_memory.largest_tensor_elements(model, 256, 256)
    assert largest == (8 + 16) * 256 * 256  # full resolution: the 8-filter skip joined to the 16-filter path
    assert device.batch_size_for([model], 256, 256, budget=10**15, most=64) == 64
    monkeypatch.setattr(device, "MAX_TENSOR_ELEMENTS", 10 * largest + 1)
    assert device.batch_size_for([model], 256, 256, budget=10**15, most=64) == 10


def test_unverified_keras_falls_back_with_one_logged_line(executor, monkeypatch, caplog):
    executor(False)
    monkeypatch.setattr(keras, "__version__", "3.99.0")
    monkeypatch.setattr(graph_memory, "_logged", set())
    with caplog.at_level("WARNING", logger=graph_memory.__name__):
        assert not graph_memory.install() and not graph_memory.install()
    assert not graph_memory.installed()
    assert len(caplog.records) == 1 and "Keras 3.99.0 is outside" in caplog.text
    monkeypatch.setattr(keras, "__version__", "3.15.1")
    monkeypatch.setenv("BUILDINGS_FREE_INTERMEDIATES", "0")
    assert not graph_memory.install()
