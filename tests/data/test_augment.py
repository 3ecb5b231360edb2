"""Device-side augmentation (buildings.data.augment): masks keep exactly their values, image and mask
get the same geometry, CutMix moves both, photometric changes touch the image only, and the same
parameters always give the same batch. Backend-neutral: test_backends runs this file under jax and
tensorflow too."""

import keras
import numpy as np
import pytest
from helpers import to_numpy

import buildings  # noqa: F401
from buildings.data import augment as aug

SIZE = 256


def coordinate_images(n: int) -> np.ndarray:
    """uint8 images whose red channel is the pixel's x and green its y (256 x 256: exact in uint8)."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE]
    one = np.stack([xs, ys, np.zeros_like(xs)], -1).astype(np.uint8)
    return np.repeat(one[None], n, axis=0)


def label(xs, ys):
    """A class index (with 255s) that is a function of the pixel coordinates."""
    values = (xs * 7 + ys * 13) % 5
    return np.where(values == 4, 255, values).astype(np.uint8)


def geometry_only(params: np.ndarray) -> np.ndarray:
    out = aug.identity_params(len(params))
    out[:, aug.MATRIX] = params[:, aug.MATRIX]
    return out


def run(images: np.ndarray, masks: np.ndarray, params: np.ndarray):
    x = keras.ops.convert_to_tensor(images.astype("float32") / 255.0)
    image_out = to_numpy(aug.augment_images(x, keras.ops.convert_to_tensor(params)))
    mask_out = to_numpy(aug.augment_masks(keras.ops.convert_to_tensor(masks), keras.ops.convert_to_tensor(params)))
    return image_out, mask_out


@pytest.mark.parametrize("preset", ["light", "strong"])
def test_image_and_mask_get_the_same_geometry(preset):
    n = 12
    images = coordinate_images(n)
    masks = np.repeat(label(images[0, ..., 0].astype(int), images[0, ..., 1].astype(int))[None, ..., None], n, 0)
    params = geometry_only(aug.draw_augment_params(np.random.default_rng(3), n, SIZE, SIZE, preset))
    assert (np.abs(params[:, aug.MATRIX] - [1, 0, 0, 0, 1, 0]).sum(1) > 0).sum() >= n // 2  # most move
    image_out, mask_out = run(images, masks, params)
    source_x = np.rint(image_out[..., 0] * 255).astype(int)
    source_y = np.rint(image_out[..., 1] * 255).astype(int)
    expected = label(source_x, source_y)
    agree = (mask_out[..., 0] == expected).mean(axis=(1, 2))
    exact = np.abs(params[:, aug.MATRIX] - np.rint(params[:, aug.MATRIX])).max(1) < 1e-6  # flips / quarter turns
    assert (agree[exact] == 1.0).all()  # permutations: every pixel where its image pixel came from
    assert (agree[~exact] > 0.97).all(), agree  # affine: bilinear vs nearest may differ by one pixel at edges
    if preset == "strong":
        assert (~exact).any()


def test_masks_hold_only_their_own_values():
    rng = np.random.default_rng(0)
    n = 8
    masks = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=(n, SIZE, SIZE, 1))
    masks[:, :40] = 255  # padding as the CPU crop writes it
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
    params = aug.draw_augment_params(rng, n, SIZE, SIZE, "strong", cutmix=1.0)
    _, mask_out = run(images, masks, params)
    assert mask_out.dtype == np.uint8 and set(np.unique(mask_out)) <= {0, 1, 2, 3, 255}
    binary = (masks > 1).astype(np.uint8)
    _, binary_out = run(images, binary, params)
    assert set(np.unique(binary_out)) <= {0, 1}


def test_cutmix_moves_image_and_mask_together():
    n = 4
    images = np.stack([np.full((SIZE, SIZE, 3), 40 * (i + 1), np.uint8) for i in range(n)])
    masks = np.stack([np.full((SIZE, SIZE, 1), i, np.uint8) for i in range(n)])
    params = aug.identity_params(n)
    params[0, aug.PARTNER], params[0, aug.BOX] = 2, (10, 20, 110, 150)
    image_out, mask_out = run(images, masks, params)
    box = np.zeros((SIZE, SIZE), bool)
    box[10:110, 20:150] = True
    np.testing.assert_array_equal(mask_out[0, ..., 0], np.where(box, 2, 0))
    np.testing.assert_allclose(image_out[0, ..., 0], np.where(box, 120 / 255, 40 / 255), atol=1e-6)
    np.testing.assert_array_equal(mask_out[1:], masks[1:])  # the others have no box


def test_photometric_changes_touch_the_image_only_and_are_reproducible():
    rng = np.random.default_rng(1)
    n = 4
    images = rng.integers(60, 200, (n, SIZE, SIZE, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (n, SIZE, SIZE, 1), dtype=np.uint8)
    params = aug.identity_params(n)
    params[0, aug.BRIGHTNESS] = 0.1
    params[1, aug.CONTRAST] = 1.2
    params[2, aug.NOISE_STD], params[2, aug.NOISE_SEED] = 0.05, 7
    params[3, aug.BLUR] = 2
    image_out, mask_out = run(images, masks, params)
    np.testing.assert_array_equal(mask_out, masks)
    base = images.astype(np.float32) / 255
    np.testing.assert_allclose(image_out[0], np.clip(base[0] + 0.1, 0, 1), atol=1e-3)
    np.testing.assert_allclose(image_out[1], np.clip(base[1] * 1.2, 0, 1), atol=1e-3)
    noise = image_out[2] - base[2]
    assert abs(noise.std() - 0.05) < 0.005 and abs(noise.mean()) < 0.005  # Gaussian, the requested sigma
    assert np.abs(np.diff(image_out[3], axis=0)).mean() < 0.6 * np.abs(np.diff(base[3], axis=0)).mean()  # blurred
    again, _ = run(images, masks, params)
    np.testing.assert_array_equal(again, image_out)  # no device random state: same parameters, same batch


def test_the_draws_follow_the_preset():
    rng = np.random.default_rng(5)
    none = aug.draw_augment_params(rng, 16, SIZE, SIZE, "none")
    np.testing.assert_array_equal(none, aug.identity_params(16))
    light = aug.draw_augment_params(rng, 64, SIZE, SIZE, "light")
    np.testing.assert_array_equal(light[:, aug.MATRIX.stop:], aug.identity_params(64)[:, aug.MATRIX.stop:])
    strong = aug.draw_augment_params(rng, 256, SIZE, SIZE, "strong", cutmix=0.5)
    assert 0.35 < (strong[:, aug.BRIGHTNESS] != 0).mean() < 0.65  # p 0.5
    assert 0.2 < (strong[:, aug.GAMMA] != 1).mean() < 0.4  # p 0.3
    assert 0.35 < (strong[:, aug.PARTNER] >= 0).mean() < 0.65
    assert (strong[:, aug.PARTNER] != np.arange(256)).all()  # never pastes from itself
    with pytest.raises(ValueError, match="augmentation must be one of"):
        aug.draw_augment_params(rng, 2, SIZE, SIZE, "heavy")
