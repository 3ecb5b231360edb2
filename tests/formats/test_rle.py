import numpy as np
import pytest
from helpers import raw_mask_lines
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from buildings.formats.rle import decode_rle, encode_rle, validate_rle


def reference_decode(text, shape):
    """Loop-based decoder of the contest notebooks: independent of the vectorised one."""
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    tokens = [int(t) for t in text.split()]
    for start, length in zip(tokens[0::2], tokens[1::2]):
        flat[start - 1:start - 1 + length] = 1
    return flat.reshape(shape, order="F")


def test_known_small_mask_is_column_major_and_one_indexed():
    mask = np.array([[0, 1, 1],
                     [1, 0, 1]], dtype=np.uint8)
    # column-major pixel order: (0,0)=0 (1,0)=1 | (0,1)=1 (1,1)=0 | (0,2)=1 (1,2)=1
    assert encode_rle(mask) == "2 2 5 2"
    np.testing.assert_array_equal(decode_rle("2 2 5 2", (2, 3)), mask)


def test_empty_and_full_masks():
    assert encode_rle(np.zeros((4, 5), np.uint8)) == ""
    assert encode_rle(np.ones((4, 5), bool)) == "1 20"
    assert decode_rle("", (4, 5)).sum() == 0
    assert decode_rle("1 20", (4, 5)).all()
    assert decode_rle("", (4, 5)).shape == (4, 5)


def test_decode_dtype_and_values():
    mask = decode_rle("3 4 10 1", (4, 4))
    assert mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}


def test_adjacent_runs_are_accepted_and_merge_on_encode():
    mask = decode_rle("1 2 3 2", (2, 3))
    assert mask.sum() == 4
    assert encode_rle(mask) == "1 4"


@settings(max_examples=200, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40)), elements=st.integers(0, 1)))
def test_round_trip_random_masks(mask):
    text = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle(text, mask.shape), mask)
    np.testing.assert_array_equal(reference_decode(text, mask.shape), mask)
    assert validate_rle(text, mask.shape) == (len(text.split()) // 2)


@settings(max_examples=100, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 30), st.integers(1, 30))))
def test_round_trip_bool_masks_and_text(mask):
    text = encode_rle(mask)
    assert encode_rle(decode_rle(text, mask.shape)) == text


def test_encode_accepts_trailing_channel_and_rejects_non_binary():
    mask = np.zeros((3, 3, 1), np.uint8)
    mask[1, 1] = 1
    assert encode_rle(mask) == "5 1"
    with pytest.raises(ValueError, match="0/255 PNG"):
        encode_rle(np.full((2, 2), 255, np.uint8))
    with pytest.raises(ValueError, match="threshold probabilities"):
        encode_rle(np.full((2, 2), 0.7))
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros((2, 2, 2), np.uint8))


# At least 15 malformed strings, each with the words its own error must contain.
MALFORMED = [
    ("1 2 3", "odd number of tokens"),
    ("5", "odd number of tokens"),
    ("1 2 x 4", "token 3 ('x')"),
    ("1.5 2", "token 1 ('1.5')"),
    ("1 2.0", "token 2 ('2.0')"),
    ("-1 2", "token 1 ('-1')"),
    ("1 -2", "token 2 ('-2')"),
    ("+1 2", "token 1 ('+1')"),
    ("1e3 2", "token 1 ('1e3')"),
    ("1,2", "token 1 ('1,2')"),
    ("１ 2", "token 1 ('１')"),
    ("0 5", "start 0 is below 1"),
    ("3 0", "length 0 is below 1"),
    ("10 2 5 2", "not sorted"),
    ("1 5 3 2", "overlaps"),
    ("16 2", "past the image end"),
    ("17 1", "past the image end"),
    ("99999999999999999999999 1", "past the image end"),
    ("1 2\t5 1", "separated by spaces"),
    ("1 2\n5 1", "separated by spaces"),
    ("nan", "token 1 ('nan')"),
]


@pytest.mark.parametrize("text, message", MALFORMED)
def test_malformed_rle_each_gets_its_own_error(text, message):
    with pytest.raises(ValueError) as info:
        decode_rle(text, (4, 4))
    assert message in str(info.value)
    with pytest.raises(ValueError):
        validate_rle(text, (4, 4))


def test_malformed_messages_are_distinct():
    messages = set()
    for text, _ in MALFORMED:
        with pytest.raises(ValueError) as info:
            decode_rle(text, (4, 4))
        messages.add(str(info.value))
    assert len(messages) == len(MALFORMED)


def test_non_string_and_bad_shape():
    with pytest.raises(ValueError, match="must be a string"):
        decode_rle(float("nan"), (4, 4))
    with pytest.raises(ValueError, match="shape"):
        decode_rle("1 1", (0, 4))


@pytest.mark.real_data
def test_barnarp_masks_round_trip_exactly(barnarp):
    pairs = raw_mask_lines(barnarp / "train_mask.csv.zip") + raw_mask_lines(barnarp / "test_a_mask.csv")
    assert len(pairs) == 170
    for name, text in pairs:
        mask = decode_rle(text, (512, 512))
        np.testing.assert_array_equal(mask, reference_decode(text, (512, 512)), err_msg=name)
        assert encode_rle(mask) == text, name
