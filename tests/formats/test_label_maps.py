"""Label maps: PNG codec, value checks, result.zip writing and rule checks, and the mIoU score."""

import zipfile

import cv2
import numpy as np
import pytest

from buildings.errors import LabelMapError
from buildings.formats.label_maps import (
    ResultZipWriter,
    check_labels,
    check_result_zip,
    confusion_matrix,
    decode_label_png,
    encode_label_png,
    score_label_maps,
)


def random_labels(rng, shape=(40, 56), n=4, ignore=True):
    labels = rng.integers(0, n, shape).astype(np.uint8)
    if ignore:
        labels[5:12, 7:20] = 255
    return labels


def test_png_round_trip_keeps_every_value_including_255():
    labels = random_labels(np.random.default_rng(0))
    back = decode_label_png(encode_label_png(labels), "x")
    assert back.dtype == np.uint8 and back.shape == labels.shape
    np.testing.assert_array_equal(back, labels)


def test_grey_saved_as_rgb_is_accepted_but_colour_labels_are_refused():
    labels = random_labels(np.random.default_rng(1), ignore=False)
    ok, grey_rgb = cv2.imencode(".png", np.dstack([labels] * 3))
    np.testing.assert_array_equal(decode_label_png(grey_rgb.tobytes(), "g.png"), labels)
    colour = np.dstack([labels, labels * 2, labels])
    ok, data = cv2.imencode(".png", colour)
    with pytest.raises(LabelMapError, match="c.png: a 3-channel colour image"):
        decode_label_png(data.tobytes(), "c.png")
    with pytest.raises(LabelMapError, match="junk.png: not a decodable PNG"):
        decode_label_png(b"not a png", "junk.png")


def test_check_labels_names_the_file_and_the_bad_values():
    labels = np.zeros((8, 8), np.uint8)
    labels[0, :3] = 7
    labels[1, 0] = 9
    with pytest.raises(LabelMapError, match=r"lab_train/T1.png: value\(s\) 7, 9 in 4 pixel\(s\); expected 0..3"):
        check_labels(labels, 4, "lab_train/T1.png")
    labels[:] = 255
    check_labels(labels, 4, "x")  # unlabelled is fine in training labels...
    with pytest.raises(LabelMapError, match="value.*255"):
        check_labels(labels, 4, "x", allow_ignore=False)  # ...but never in a prediction


def test_confusion_and_score_match_a_direct_computation():
    rng = np.random.default_rng(2)
    truth = random_labels(rng, (64, 64))
    pred = rng.integers(0, 4, (64, 64)).astype(np.uint8)
    confusion = confusion_matrix(truth, pred, 4)
    valid = truth != 255
    assert confusion.sum() == valid.sum()
    for t in range(4):
        for p in range(4):
            assert confusion[t, p] == np.sum((truth == t) & (pred == p))


def write_folder(folder, maps):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, labels in maps.items():
        (folder / f"{stem}.png").write_bytes(encode_label_png(labels))


def test_score_label_maps_against_set_arithmetic(tmp_path):
    rng = np.random.default_rng(3)
    truth = {f"T{i}": random_labels(rng, (32, 48)) for i in range(5)}
    pred = {k: np.where(rng.random(v.shape) < 0.7, np.where(v == 255, 0, v), rng.integers(0, 4, v.shape))
            .astype(np.uint8) for k, v in truth.items()}
    write_folder(tmp_path / "truth", truth)
    with ResultZipWriter(tmp_path / "result.zip", num_classes=4) as result:
        for stem, labels in pred.items():
            result.add(f"{stem}.jpg", labels)
    score = score_label_maps(tmp_path / "result.zip", tmp_path / "truth", 4)
    t = np.concatenate([v.ravel() for v in truth.values()])
    p = np.concatenate([pred[k].ravel() for k in truth])
    keep = t != 255
    t, p = t[keep], p[keep]
    ious = [np.sum((t == c) & (p == c)) / np.sum((t == c) | (p == c)) for c in range(4)]
    assert score.class_iou == pytest.approx(ious)
    assert score.miou == pytest.approx(np.mean(ious))
    freq = [np.mean(t == c) for c in range(4)]
    assert score.fwiou == pytest.approx(float(np.dot(freq, ious)))
    assert score.accuracy == pytest.approx(np.mean(t == p))
    assert score.n_images == 5
    # Any class where the truth says 255: those pixels are left out, so this scores 1.
    write_folder(tmp_path / "perfect", {k: np.where(v == 255, 3, v).astype(np.uint8) for k, v in truth.items()})
    perfect = score_label_maps(tmp_path / "perfect", tmp_path / "truth", 4)
    assert perfect.miou == 1.0 and perfect.accuracy == 1.0


def test_score_refuses_missing_or_unmatched_maps(tmp_path):
    rng = np.random.default_rng(4)
    write_folder(tmp_path / "truth", {"A": random_labels(rng), "B": random_labels(rng)})
    write_folder(tmp_path / "pred", {"A": random_labels(rng, ignore=False)})
    with pytest.raises(LabelMapError, match=r"no prediction for 1 truth map\(s\): B.png"):
        score_label_maps(tmp_path / "pred", tmp_path / "truth", 4)
    write_folder(tmp_path / "pred", {"B": random_labels(rng, (10, 10), ignore=False), "C": random_labels(rng)})
    with pytest.raises(LabelMapError, match="B.png: 10x10 .WxH., truth is 56x40|C.png: no truth"):
        score_label_maps(tmp_path / "pred", tmp_path / "truth", 4)


def make_result(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


IMAGES = {"T1.jpg": (32, 48), "T2.jpg": (32, 48)}


def good_members():
    rng = np.random.default_rng(5)
    return {"T1.png": encode_label_png(random_labels(rng, (32, 48), ignore=False)),
            "T2.png": encode_label_png(random_labels(rng, (32, 48), ignore=False))}


def test_check_result_zip_accepts_a_valid_result(tmp_path):
    checked = check_result_zip(make_result(tmp_path / "result.zip", good_members()), IMAGES, 4)
    assert checked.n_files == 2 and sum(checked.class_pixels) == 2 * 32 * 48


@pytest.mark.parametrize("edit, message", [
    (lambda m: {"T1.png": m["T1.png"]}, r"1 files for 2 test images; 1 test image\(s\) have no PNG: T2.png"),
    (lambda m: {**m, "T3.png": m["T1.png"]}, r"1 file\(s\) match no test image: T3.png"),
    (lambda m: {"result/T1.png": m["T1.png"], "result/T2.png": m["T2.png"]}, "inside folders"),
    (lambda m: {**m, "T2.png": encode_label_png(np.zeros((16, 48), np.uint8))}, "T2.png: 48x16 .WxH., the test image is 48x32"),
    (lambda m: {**m, "T2.png": encode_label_png(np.full((32, 48), 4, np.uint8))}, r"T2.png: value\(s\) 4 in 1536"),
    (lambda m: {**m, "T2.png": encode_label_png(np.full((32, 48), 255, np.uint8))}, r"value\(s\) 255"),
    (lambda m: {**m, "T2.png": cv2.imencode(".png", np.zeros((32, 48, 3), np.uint8))[1].tobytes()},
     "single-channel 8-bit"),
    (lambda m: {**m, "T2.png": cv2.imencode(".jpg", np.zeros((32, 48), np.uint8))[1].tobytes()}, "T2.png: not a PNG"),
], ids=["missing", "extra", "nested", "size", "value", "unlabelled", "rgb", "jpeg"])
def test_check_result_zip_names_each_broken_rule(tmp_path, edit, message):
    path = make_result(tmp_path / "result.zip", edit(good_members()))
    with pytest.raises(LabelMapError, match=message):
        check_result_zip(path, IMAGES, 4)


def test_result_writer_is_atomic_and_refuses_bad_predictions(tmp_path):
    out = tmp_path / "result.zip"
    with pytest.raises(LabelMapError, match="prediction for T2.jpg: value"):
        with ResultZipWriter(out, num_classes=4) as result:
            result.add("T1.jpg", np.zeros((8, 8), np.uint8))
            result.add("T2.jpg", np.full((8, 8), 5, np.uint8))
    assert list(tmp_path.iterdir()) == []  # nothing half-written
    with pytest.raises(LabelMapError, match="test images 'T1.jpg' and 'T1.jpeg' would both be written as 'T1.png'"):
        with ResultZipWriter(out, num_classes=4) as result:
            result.add("T1.jpg", np.zeros((8, 8), np.uint8))
            result.add("T1.jpeg", np.zeros((8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []
