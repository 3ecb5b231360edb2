"""Batches for model.fit: shapes, binary masks under augmentation, determinism, thread safety."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from buildings.data.pipeline import SegmentationBatches, build_augmentation, cutmix
from buildings.data.splits import open_split
from buildings.preprocessing import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def train_source(synth_dataset):
    return open_split(synth_dataset, "train")


def test_eval_batches_are_normalised_images_and_float_masks(train_source):
    batches = SegmentationBatches(train_source, batch_size=4)
    assert len(batches) == -(-len(train_source) // 4)  # evaluation keeps the partial batch
    images, masks = batches[0]
    assert images.shape == (4, 512, 512, 3) and images.dtype == np.float32
    assert masks.shape == (4, 512, 512, 1) and masks.dtype == np.float32
    assert set(np.unique(masks)) <= {0.0, 1.0}
    pixels = images * IMAGENET_STD + IMAGENET_MEAN  # undo the normalisation: back in [0, 1]
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    with pytest.raises(IndexError):
        batches[len(batches)]


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
def test_training_batches_crop_and_keep_masks_binary(train_source, preset):
    batches = SegmentationBatches(train_source, batch_size=3, image_size=256, augment=preset,
                                  training=True, seed=1, cutmix=0.5)
    assert len(batches) == len(train_source) // 3  # training drops the partial batch
    for index in range(len(batches)):
        images, masks = batches[index]
        assert images.shape == (3, 256, 256, 3) and masks.shape == (3, 256, 256, 1)
        assert set(np.unique(masks)) <= {0.0, 1.0}


def test_resize_mode_and_bad_preset(train_source):
    images, masks = SegmentationBatches(train_source, 2, image_size=(128, 192), training=True,
                                        resize_mode="resize")[0]
    assert images.shape == (2, 128, 192, 3) and masks.shape == (2, 128, 192, 1)
    with pytest.raises(ValueError, match="augmentation must be one of"):
        build_augmentation("heavy")
    with pytest.raises(ValueError, match="no full batch"):
        SegmentationBatches(train_source, batch_size=1000, training=True)


def _epoch(batches):
    return [batches[i] for i in range(len(batches))]


def test_deterministic_under_a_seed_and_reshuffled_each_epoch(train_source):
    def make(seed):
        return SegmentationBatches(train_source, 2, image_size=256, augment="strong", training=True,
                                   seed=seed, cutmix=0.3)

    a, b, c = make(5), make(5), make(6)
    first_a, first_b, first_c = _epoch(a), _epoch(b), _epoch(c)
    for (xa, ya), (xb, yb) in zip(first_a, first_b, strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert any(not np.array_equal(xa, xc) for (xa, _), (xc, _) in zip(first_a, first_c, strict=True))
    order0 = a.order.copy()
    a.on_epoch_end()
    assert not np.array_equal(order0, a.order) and sorted(order0) == sorted(a.order)
    b.set_epoch(1)  # resuming lands on the same epoch
    np.testing.assert_array_equal(a[0][0], b[0][0])


def test_threads_give_the_same_batches_as_one_thread(train_source):
    batches = SegmentationBatches(train_source, 1, image_size=256, augment="strong", training=True, seed=2)
    sequential = _epoch(batches)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(batches.__getitem__, range(len(batches))))
    for (xs, ys), (xt, yt) in zip(sequential, threaded, strict=True):
        np.testing.assert_array_equal(xs, xt)
        np.testing.assert_array_equal(ys, yt)


def test_cutmix_pastes_boxes_from_the_batch():
    images = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (10, 200)])
    masks = np.stack([np.zeros((32, 32), np.uint8), np.ones((32, 32), np.uint8)])
    cutmix(images, masks, np.random.default_rng(0), p=1.0)
    assert (images[0] == 200).any() and (images[0] == 10).any()
    # where the image took pixels from sample 1, so did the mask
    np.testing.assert_array_equal(images[0, ..., 0] == 200, masks[0] == 1)
