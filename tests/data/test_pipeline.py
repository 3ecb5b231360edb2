"""Batches for model.fit: uint8 shapes, binary masks under augmentation, determinism, thread safety,
and the device side's normalisation (buildings.training.training_model)."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from buildings.data.pipeline import SegmentationBatches, build_augmentation, cutmix
from buildings.data.splits import open_split
from buildings.preprocessing import normalise


@pytest.fixture(scope="module")
def train_source(synth_dataset):
    return open_split(synth_dataset, "train")


def test_eval_batches_are_uint8_and_normalised_on_the_device(train_source):
    import keras

    from buildings.data.splits import decode_record
    from buildings.training.training_model import TrainingModel

    batches = SegmentationBatches(train_source, batch_size=4)
    assert len(batches) == -(-len(train_source) // 4)  # evaluation keeps the partial batch
    inputs, masks = batches[0]
    images = inputs["image"]
    assert set(inputs) == {"image"}  # no augmentation parameters outside training
    assert images.shape == (4, 512, 512, 3) and images.dtype == np.uint8
    assert masks.shape == (4, 512, 512, 1) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    np.testing.assert_array_equal(images[0], decode_record(train_source[0])[0])  # the stored pixels
    identity = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Identity()])
    on_device = keras.ops.convert_to_numpy(TrainingModel(identity)({"image": images[:2]}))
    np.testing.assert_allclose(on_device, normalise(images[:2]), atol=1e-5)
    with pytest.raises(IndexError):
        batches[len(batches)]


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
def test_training_batches_crop_and_keep_masks_binary(train_source, preset):
    batches = SegmentationBatches(train_source, batch_size=3, image_size=256, augment=preset,
                                  training=True, seed=1, cutmix=0.5)
    assert len(batches) == len(train_source) // 3  # training drops the partial batch
    for index in range(len(batches)):
        inputs, masks = batches[index]
        assert inputs["image"].shape == (3, 256, 256, 3) and masks.shape == (3, 256, 256, 1)
        assert set(np.unique(masks)) <= {0, 1}


def test_resize_mode_and_bad_preset(train_source):
    inputs, masks = SegmentationBatches(train_source, 2, image_size=(128, 192), training=True,
                                        resize_mode="resize")[0]
    assert inputs["image"].shape == (2, 128, 192, 3) and masks.shape == (2, 128, 192, 1)
    with pytest.raises(ValueError, match="augmentation must be one of"):
        build_augmentation("heavy")
    with pytest.raises(ValueError, match="no full batch"):
        SegmentationBatches(train_source, batch_size=1000, training=True)


def _epoch(batches):
    return [batches[i] for i in range(len(batches))]


def _same(a, b) -> bool:
    (inputs_a, mask_a), (inputs_b, mask_b) = a, b
    return inputs_a.keys() == inputs_b.keys() and np.array_equal(mask_a, mask_b) and all(
        np.array_equal(inputs_a[k], inputs_b[k]) for k in inputs_a)


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_deterministic_under_a_seed_and_reshuffled_each_epoch(train_source, augment_on):
    def make(seed):
        return SegmentationBatches(train_source, 2, image_size=256, augment="strong", training=True,
                                   seed=seed, cutmix=0.3, augment_on=augment_on)

    a, b, c = make(5), make(5), make(6)
    first_a, first_b, first_c = _epoch(a), _epoch(b), _epoch(c)
    assert all(_same(x, y) for x, y in zip(first_a, first_b, strict=True))
    assert not all(_same(x, y) for x, y in zip(first_a, first_c, strict=True))
    if augment_on == "device":  # the workers only crop; the draws travel with the batch
        assert first_a[0][0]["augment"].shape == (2, 17) and first_a[0][0]["image"].dtype == np.uint8
    order0 = a.order.copy()
    a.on_epoch_end()
    assert not np.array_equal(order0, a.order) and sorted(order0) == sorted(a.order)
    b.set_epoch(1)  # resuming lands on the same epoch
    assert _same(a[0], b[0])


@pytest.mark.parametrize("augment_on", ["cpu", "device"])
def test_threads_give_the_same_batches_as_one_thread(train_source, augment_on):
    batches = SegmentationBatches(train_source, 1, image_size=256, augment="strong", training=True, seed=2,
                                  augment_on=augment_on)
    sequential = _epoch(batches)
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(batches.__getitem__, range(len(batches))))
    assert all(_same(x, y) for x, y in zip(sequential, threaded, strict=True))


def test_cutmix_pastes_boxes_from_the_batch():
    images = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (10, 200)])
    masks = np.stack([np.zeros((32, 32), np.uint8), np.ones((32, 32), np.uint8)])
    cutmix(images, masks, np.random.default_rng(0), p=1.0)
    assert (images[0] == 200).any() and (images[0] == 10).any()
    # where the image took pixels from sample 1, so did the mask
    np.testing.assert_array_equal(images[0, ..., 0] == 200, masks[0] == 1)
