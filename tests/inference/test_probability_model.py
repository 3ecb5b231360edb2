"""The device half of prediction (``ProbabilityModel``: uint8 in; normalisation, TTA, sigmoid /
softmax and the TTA mean inside one ``predict_on_batch``) against the NumPy reference transforms.
Backend-neutral: test_backends runs this file under jax and tensorflow too."""

import keras
import numpy as np
import pytest

from buildings.inference.device_model import ProbabilityModel
from buildings.models import build_model
from buildings.preprocessing import normalise


def _d4(k: int, flip: bool):
    """A view written independently of buildings.tta: k quarter turns with np.rot90, then a mirror."""
    def forward(x):
        x = np.rot90(x, k, axes=(1, 2))
        return x[:, :, ::-1] if flip else x

    def inverse(y):
        return np.rot90(y[:, :, ::-1] if flip else y, -k, axes=(1, 2))

    return forward, inverse


REFERENCE_VIEWS = {  # what the modes promise: the identity; + horizontal and vertical flips; the dihedral group
    "none": [_d4(0, False)],
    "flip": [_d4(0, False), (lambda x: x[:, :, ::-1], lambda y: y[:, :, ::-1]),
             (lambda x: x[:, ::-1], lambda y: y[:, ::-1])],
    "d4": [_d4(k, f) for k in range(4) for f in (False, True)],
}


def reference(model, images, mode, num_classes):
    total = 0.0
    transforms = REFERENCE_VIEWS[mode]
    for forward, inverse in transforms:
        logits = np.asarray(model.predict_on_batch(np.ascontiguousarray(forward(normalise(images)))), np.float64)
        if num_classes == 1:
            probs = 1 / (1 + np.exp(-logits))
        else:
            e = np.exp(logits - logits.max(-1, keepdims=True))
            probs = e / e.sum(-1, keepdims=True)
        total = total + inverse(probs)
    return total / len(transforms)


@pytest.mark.parametrize("num_classes", [1, 3])
@pytest.mark.parametrize("mode", ["none", "flip", "d4"])
def test_device_probabilities_equal_the_numpy_reference(mode, num_classes):
    keras.utils.set_random_seed(0)
    model = build_model("unet", filters=4, depth=2, num_classes=num_classes)
    images = np.random.default_rng(1).integers(0, 256, (2, 64, 96, 3), dtype=np.uint8)  # not square
    got = np.asarray(ProbabilityModel(model, mode).predict_on_batch(images))
    assert got.dtype == np.float32 and got.shape == (2, 64, 96, num_classes)
    np.testing.assert_allclose(got, reference(model, images, mode, num_classes), atol=2e-5)
    if num_classes > 1:
        np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-5)


def test_every_view_is_undone_before_averaging():
    """A model that returns a channel of its input: any view left rotated or flipped would not
    average back to the identity."""
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Lambda(lambda x: x[..., :1])(inputs))
    images = np.random.default_rng(2).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    expected = 1 / (1 + np.exp(-normalise(images)[..., :1].astype(np.float64)))
    for mode in ("flip", "d4"):
        got = np.asarray(ProbabilityModel(model, mode).predict_on_batch(images))
        np.testing.assert_allclose(got, expected, atol=1e-6)
