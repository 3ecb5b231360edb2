import numpy as np
import pytest
from helpers import raw_mask_lines

from buildings.errors import SubmissionError
from buildings.formats.rle import decode_rle, encode_rle
from buildings.formats.submission import (
    image_dice,
    image_iou,
    mean_image_dice,
    read_submission,
    score_submission,
    write_submission,
)


def test_image_dice_and_iou_known_values():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert image_dice(a, b) == 1.0 and image_iou(a, b) == 1.0  # both empty
    a[0, :2] = True
    assert image_dice(a, b) == 0.0 and image_iou(a, b) == 0.0  # prediction on empty truth
    b[0, 1:3] = True  # overlap of 1 pixel, 2 + 2 pixels
    assert image_dice(a, b) == pytest.approx(2 * 1 / 4)
    assert image_iou(a, b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shapes differ"):
        image_dice(a, np.zeros((3, 3)))


def test_write_then_read_round_trip(tmp_path):
    rows = {"a.jpg": "1 3", "b.jpg": "", "c.jpg": "5 2 9 1"}
    out = write_submission(tmp_path / "sub.csv", rows, shape=(4, 4))
    assert out.read_bytes() == b"a.jpg\t1 3\nb.jpg\t\nc.jpg\t5 2 9 1\n"
    assert read_submission(out, shape=(4, 4)) == rows
    assert list(read_submission(out)) == ["a.jpg", "b.jpg", "c.jpg"]  # order kept


def test_reader_tolerates_header_quotes_crlf_spaces_and_commas(tmp_path):
    path = tmp_path / "messy.csv"
    path.write_bytes(
        b'ImageId\tEncodedPixels\r\n'
        b'"a.jpg"\t"1 3"\r\n'
        b'"b.jpg\t5 2"\r\n'
        b'c.jpg\t  \r\n'
        b'd.jpg,2 2   \r\n'
        b'e.jpg\r\n'
        b'\r\n'
    )
    assert read_submission(path, shape=(4, 4)) == {
        "a.jpg": "1 3", "b.jpg": "5 2", "c.jpg": "", "d.jpg": "2 2", "e.jpg": ""}


@pytest.mark.parametrize("content, message", [
    (b"a.jpg\t1 3\na.jpg\t\n", ":2: image 'a.jpg' appears again (first on line 1)"),
    (b"a.jpg\t1 3\nb.jpg\t1 2 3\n", ":2: b.jpg: RLE has an odd number"),
    (b"a.jpg\t1 3\tx\ty\n", ":1: expected 'name<TAB>rle', found 4 fields"),
    (b"a.jpg\t1 3\n\t5 1\n", ":2: empty image name"),
    (b"a.jpg\t1 3\nb.jpg 5 1\n", ":2: no tab between name and RLE"),
    (b"a.jpg\t1 3\nb.jpg\t40 2\n", ":2: b.jpg: RLE run 1"),
])
def test_reader_errors_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(SubmissionError) as info:
        read_submission(path, shape=(4, 4))
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_write_is_atomic_and_validates_first(tmp_path):
    target = tmp_path / "sub.csv"
    target.write_text("old\t\n")
    with pytest.raises(SubmissionError, match="row 2: b.jpg: RLE"):
        write_submission(target, [("a.jpg", "1 1"), ("b.jpg", "1 2 3")], shape=(4, 4))
    assert target.read_text() == "old\t\n"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]  # no temp file left
    with pytest.raises(SubmissionError, match="appears twice"):
        write_submission(target, [("a.jpg", ""), ("a.jpg", "")])


def test_name_mismatch_is_one_error_listing_missing_and_extra():
    truth = {"a.jpg": "", "b.jpg": "", "c.jpg": ""}
    pred = {"a.jpg": "", "d.jpg": ""}
    with pytest.raises(SubmissionError) as info:
        score_submission(pred, truth, shape=(4, 4))
    text = str(info.value)
    assert "2 missing from the submission (b.jpg, c.jpg)" in text
    assert "1 in the submission but not in the truth (d.jpg)" in text


def test_score_against_numpy_reference():
    rng = np.random.default_rng(0)
    truth, pred, expected = {}, {}, []
    for i in range(12):
        t = rng.random((8, 8)) < (0 if i % 3 == 0 else 0.3)
        p = rng.random((8, 8)) < (0 if i % 4 == 0 else 0.3)
        truth[f"{i}.jpg"], pred[f"{i}.jpg"] = encode_rle(t), encode_rle(p)
        denominator = t.sum() + p.sum()
        expected.append(1.0 if denominator == 0 else 2 * (t & p).sum() / denominator)
    result = score_submission(pred, truth, shape=(8, 8))
    assert result.dice == pytest.approx(np.mean(expected))
    assert mean_image_dice(pred, truth, shape=(8, 8)) == result.dice
    assert result.n_images == 12 and result.n_truth_empty == 4


@pytest.mark.real_data
def test_barnarp_truth_against_itself_scores_one(barnarp):
    result = score_submission(barnarp / "test_a_mask.csv", barnarp / "test_a_mask.csv")
    assert result.dice == 1.0 and result.iou == 1.0 and result.n_images == 50


@pytest.mark.real_data
def test_barnarp_placeholder_and_empty_submissions(barnarp, tmp_path):
    truth_pairs = raw_mask_lines(barnarp / "test_a_mask.csv")
    truth_areas = {name: decode_rle(rle).sum() for name, rle in truth_pairs}
    # All-empty submission: Dice 1 on empty-truth images, 0 elsewhere.
    empty = write_submission(tmp_path / "empty.csv", {name: "" for name in truth_areas})
    expected_empty = np.mean([area == 0 for area in truth_areas.values()])
    assert 0 < expected_empty < 1
    assert mean_image_dice(empty, barnarp / "test_a_mask.csv") == pytest.approx(expected_empty)
    # The sample file marks pixel 1 in every image: Dice 0 on empty truth, 2*[pixel 1 set]/(1+area) else.
    expected_placeholder = np.mean([
        0.0 if truth_areas[name] == 0 else 2.0 * decode_rle(rle)[0, 0] / (1 + truth_areas[name])
        for name, rle in truth_pairs])
    placeholder = mean_image_dice(barnarp / "test_a_samplesubmit.csv", barnarp / "test_a_mask.csv")
    assert placeholder == pytest.approx(expected_placeholder)
    assert placeholder < 0.01
