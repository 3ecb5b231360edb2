"""Run-length encoding of binary masks, in the Tianchi / Kaggle contest convention.

* pixels are numbered column-major (Fortran order: down the first column, then the next),
* numbering starts at 1,
* the text is ``start length start length ...`` separated by single spaces,
* the empty string is a mask with no building.

Both directions are vectorised (no Python loop over runs) and the decoder is strict: malformed
text raises one ``RLEError`` (a ``ValueError``) that names the offending token. Why hand-written: no maintained
library implements this exact convention with validation; pycocotools' RLE is a different format
(counts of alternating runs, binary-packed).

Decoding builds the whole flat mask with a single ``np.repeat`` of alternating 0/1 values over the
gap and run lengths, so the cost is one parse (``np.fromstring``, C speed) and one pass over the
pixels. See ``experiments/bench_rle.py`` for measurements against the code contest notebooks use.
"""

from __future__ import annotations

import numpy as np

from buildings.errors import RLEError, excerpt

__all__ = ["CONTEST_SHAPE", "MAX_PIXELS", "decode_rle", "encode_rle", "validate_rle"]

CONTEST_SHAPE = (512, 512)  # the Tianchi tile (height, width): the one place it is written
# The largest mask decoded (16384 x 16384): a mask is one byte a pixel, and scoring holds a few at
# once; a mistyped shape such as 100000x100000 would otherwise exhaust memory with no message.
MAX_PIXELS = 2**28

_DIGITS_AND_SPACE = b"0123456789 "


def _shape_pixels(shape) -> int:
    try:
        height, width = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise RLEError(f"shape must be (height, width), got {excerpt(shape)}") from None
    if height < 1 or width < 1:
        raise RLEError(f"shape must be positive, got {height}x{width}")
    if height * width > MAX_PIXELS:
        raise RLEError(f"shape {height}x{width} is {height * width:,} pixels, more than the {MAX_PIXELS:,} "
                       "(16384x16384) a mask may have")
    return height * width


def _bad_token_error(text: str) -> RLEError:
    """Slow path, only on error: find the first token that is not an unsigned integer."""
    for index, token in enumerate(text.split(), start=1):
        if not (token.isascii() and token.isdigit()):
            return RLEError(
                f"RLE token {index} ({excerpt(token, 30)}) is not a whole number: RLE text is "
                "'start length' pairs of positive integers separated by spaces"
            )
    return RLEError(
        f"RLE tokens must be separated by spaces (found a tab or line break): {excerpt(text)}"
    )


def _parse_runs(text: str, n_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate ``text``; return 0-based starts and lengths (int64 arrays)."""
    if not isinstance(text, str):
        raise RLEError(f"RLE must be a string, got {type(text).__name__}: {excerpt(text)}")
    try:
        stray = text.encode("ascii").translate(None, _DIGITS_AND_SPACE)
    except UnicodeEncodeError:
        stray = b"?"
    if stray:
        raise _bad_token_error(text)
    values = np.fromstring(text, dtype=np.int64, sep=" ")  # text is digits and spaces only
    if values.size % 2:
        last = text.split()[-1]
        raise RLEError(
            f"RLE has an odd number of tokens ({values.size}): the last start ({excerpt(last, 30)}) has no length"
        )
    starts = values[0::2]
    lengths = values[1::2]
    # Guard the arithmetic below against huge (saturated) values before adding them.
    if starts.size and (starts.min() < 1 or lengths.min() < 1 or starts.max() > n_pixels
                        or lengths.max() > n_pixels):
        _raise_run_error(text, starts, lengths, n_pixels)
    starts = starts - 1
    ends = starts + lengths
    if starts.size > 1 and (starts[1:] < ends[:-1]).any():
        _raise_run_error(text, starts + 1, lengths, n_pixels)
    if starts.size and ends[-1] > n_pixels:
        _raise_run_error(text, starts + 1, lengths, n_pixels)
    return starts, lengths


def _raise_run_error(text: str, starts: np.ndarray, lengths: np.ndarray, n_pixels: int):
    """Raise the error for the first bad run (``starts`` 1-based here); tokens quoted as written."""
    tokens = text.split()
    for run, (start, length) in enumerate(zip(starts.tolist(), lengths.tolist())):
        where = f"run {run + 1} (tokens {2 * run + 1}-{2 * run + 2}: {excerpt(tokens[2 * run], 30)} {excerpt(tokens[2 * run + 1], 30)})"
        if start < 1:
            raise RLEError(f"RLE {where}: start {start} is below 1 (starts are 1-indexed)")
        if length < 1:
            raise RLEError(f"RLE {where}: length {length} is below 1")
        if start > n_pixels or start - 1 + length > n_pixels:
            raise RLEError(
                f"RLE {where}: the run ends past the image end (pixel {n_pixels})"
            )
        if run:
            prev_start, prev_length = starts[run - 1], lengths[run - 1]
            if start < prev_start + prev_length:
                what = "is not sorted after" if start < prev_start else "overlaps"
                raise RLEError(
                    f"RLE {where} {what} run {run} (start {prev_start}, length {prev_length}): "
                    "runs must be in increasing order without overlap"
                )
    raise AssertionError("no bad run found")  # pragma: no cover - callers checked first


def validate_rle(text: str, shape=CONTEST_SHAPE) -> int:
    """Check ``text`` is a well-formed RLE for ``shape``; return its number of runs."""
    starts, _ = _parse_runs(text, _shape_pixels(shape))
    return int(starts.size)


def decode_rle(text: str, shape=CONTEST_SHAPE) -> np.ndarray:
    """Decode contest RLE ``text`` to a ``uint8`` mask of ``shape`` with values in {0, 1}.

    The result is a Fortran-ordered array (it is the column-major pixel order reshaped without a
    copy); use ``np.ascontiguousarray`` where a C-contiguous buffer is needed.

    >>> decode_rle("2 2", (2, 2)).tolist()
    [[0, 1], [1, 0]]
    """
    n_pixels = _shape_pixels(shape)
    starts, lengths = _parse_runs(text, n_pixels)
    height, width = (int(v) for v in shape)
    if not starts.size:
        return np.zeros((height, width), dtype=np.uint8, order="F")
    counts = np.empty(2 * starts.size + 1, dtype=np.int64)
    counts[0] = starts[0]
    counts[2:-1:2] = starts[1:] - (starts[:-1] + lengths[:-1])  # gaps between runs
    counts[1::2] = lengths
    counts[-1] = n_pixels - (starts[-1] + lengths[-1])
    values = np.zeros(counts.size, dtype=np.uint8)
    values[1::2] = 1
    return np.repeat(values, counts).reshape((height, width), order="F")


def encode_rle(mask) -> str:
    """Encode a 2-D binary mask (bool, or integers in {0, 1}) as contest RLE text.

    >>> encode_rle(np.array([[0, 1], [1, 0]]))
    '2 2'
    """
    mask = np.asarray(mask)
    if mask.ndim == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    if mask.ndim != 2:
        raise RLEError(f"mask must be 2-D (height, width), got shape {mask.shape}")
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.integer)):
            raise RLEError(
                f"mask must be bool or integer with values 0/1, got {mask.dtype}: "
                "threshold probabilities first (e.g. probs > 0.5)"
            )
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise RLEError(
                f"mask values must be 0 or 1, found {int(mask.min())}..{int(mask.max())} "
                "(a 0/255 PNG mask needs `mask > 0` first)"
            )
    padded = np.zeros(mask.size + 2, dtype=np.int8)
    padded[1:-1] = mask.ravel(order="F")
    runs = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    runs[1::2] -= runs[::2]
    return " ".join(map(str, runs.tolist()))
