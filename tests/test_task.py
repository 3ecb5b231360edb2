"""buildings.task.Task: the one home of binary vs N classes. Each answer is checked against what
the rest of the code needs from it."""

import numpy as np
import pytest

from buildings.errors import ConfigError
from buildings.task import BINARY_LOSSES, IGNORE_INDEX, MULTICLASS_LOSSES, Task


def test_binary_and_multiclass_answers():
    binary, four = Task(1), Task(4, ("building", "farmland", "forest", "other"))
    assert binary.binary and not four.binary
    assert (binary.mask_fill, four.mask_fill) == (0, IGNORE_INDEX)
    assert (binary.default_loss, four.default_loss) == ("bce_dice", "ce_lovasz")
    assert (binary.monitor, four.monitor) == ("val_contest_dice", "val_miou")
    assert (binary.default_output_format, four.default_output_format) == ("rle", "png-zip")
    assert (binary.score_classes, four.score_classes) == (2, 4)
    assert binary.score_class_names == ("background", "building")
    assert four.class_names == ("building", "farmland", "forest", "other")
    assert Task(3).class_names == ("class0", "class1", "class2")  # names missing or of the wrong count
    assert binary.mask_values() == {0, 1} and four.mask_values() == {0, 1, 2, 3, 255}


@pytest.mark.parametrize("bad", [0, -1, 256, 2.0, True, "4"])
def test_impossible_class_counts_are_refused(bad):
    with pytest.raises(ConfigError, match="num_classes must be 1"):
        Task(bad)


def test_probabilities_and_masks():
    logits = np.array([[[-3.0], [0.0], [2.0]]], np.float32)  # (1, 3, 1)
    probs = Task(1).probabilities(logits)
    np.testing.assert_allclose(probs[..., 0], 1 / (1 + np.exp(-logits[..., 0])), rtol=1e-6)
    logits = np.array([[[1.0, 3.0, 0.0], [5.0, 1.0, 1.0]]], np.float32)  # (1, 2, 3)
    probs = Task(3).probabilities(logits)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
    assert (probs > 0).all()
    np.testing.assert_array_equal(probs.argmax(-1), [[1, 0]])
    huge = Task(1).probabilities(np.array([[[-1e4], [1e4]]], np.float32))  # no overflow warning, exact ends
    np.testing.assert_array_equal(huge[..., 0], [[0.0, 1.0]])


def test_losses_and_class_weights():
    for loss in BINARY_LOSSES:
        Task(1).check_loss(loss)
        with pytest.raises(ConfigError, match=f"loss '{loss}' is binary"):
            Task(4).check_loss(loss)
    for loss in MULTICLASS_LOSSES:
        Task(2).check_loss(loss)
        with pytest.raises(ConfigError, match=f"loss '{loss}' is for num_classes > 1"):
            Task(1).check_loss(loss)
    with pytest.raises(ConfigError, match="unknown loss 'hinge'"):
        Task(1).check_loss("hinge")
    assert Task(4).uses_class_weights("ce_lovasz") and not Task(4).uses_class_weights("lovasz_softmax")
    assert not Task(1).uses_class_weights("bce")


def test_output_formats():
    assert Task(1).check_output_format("auto") == "rle" and Task(4).check_output_format("auto") == "png-zip"
    assert Task(1).check_output_format("png-zip") == "png-zip"  # a binary model may write 0/1 PNGs
    with pytest.raises(ConfigError, match="RLE submission needs a one-logit"):
        Task(4).check_output_format("rle")
    with pytest.raises(ConfigError, match="output format must be"):
        Task(1).check_output_format("tiff")


def test_mismatched_tasks_are_named():
    Task(4).check_same(Task(4), "the model", "the data")
    with pytest.raises(ConfigError, match=r"the model is 4 classes but the data is binary \({0, 1} masks\)"):
        Task(4).check_same(Task(1), "the model", "the data")


def test_mask_pictures():
    mask = np.array([[0, 1]], np.uint8)
    np.testing.assert_array_equal(Task(1).mask_png(mask), [[0, 255]])
    np.testing.assert_array_equal(Task(4).mask_png(np.array([[0, 3]], np.uint8)), [[0, 3]])
    image = np.full((8, 8, 3), 100, np.uint8)
    labels = np.zeros((8, 8), np.uint8)
    labels[:4] = 2
    labels[-1] = IGNORE_INDEX
    shown = Task(4).overlay(image, labels)
    assert not np.array_equal(shown[0, 0], shown[5, 0])  # classes 2 and 0 tinted differently
    np.testing.assert_array_equal(shown[-1], image[-1])  # unlabelled left as it was

