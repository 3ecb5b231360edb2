"""Reading the Tianchi contest download, as users have it on disk.

The manual folder holds the four contest files either as downloaded (``train.zip``,
``train_mask.csv.zip``, ``test_a.zip``, ``test_a_samplesubmit.csv``) or extracted (``train/``,
``train_mask.csv``, ``test_a/``); either works, and they may be mixed. This is the one reader of
those files: the TFDS builder and the ``buildings data`` commands both call it.

Everything that can be checked without decoding images (names, RLE text) is checked up front by
:func:`open_contest`, so a bad download fails before any output is written; image bytes are checked
(JPEG markers, decodable, size) as they are read.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildings.errors import DataError, SubmissionError
from buildings.formats.images import ImageArchive, decode_image
from buildings.formats.rle import CONTEST_SHAPE, decode_rle
from buildings.formats.submission import read_submission

__all__ = ["CONTEST_FILES", "ContestDownload", "ContestExample", "open_contest"]

CONTEST_FILES = ("train.zip", "train_mask.csv.zip", "test_a.zip", "test_a_samplesubmit.csv")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")  # what a contest folder may hold


@dataclass(frozen=True)
class ContestExample:
    name: str
    image_bytes: bytes  # the original file bytes, never re-encoded
    mask: np.ndarray | None  # (H, W) uint8 in {0, 1}; None for test images
    source: str  # where the image came from, for messages


def _find(root: Path, *candidates: str) -> Path | None:
    for candidate in candidates:
        path = root / candidate
        if path.exists():
            return path
    return None


def _name_mismatch(label_a: str, only_a: list[str], label_b: str, only_b: list[str]) -> DataError:
    def listing(names):
        return ", ".join(names[:5]) + (f", ... and {len(names) - 5} more" if len(names) > 5 else "")

    parts = []
    if only_a:
        parts.append(f"{len(only_a)} name(s) in {label_a} have no image in {label_b}: {listing(only_a)}")
    if only_b:
        parts.append(f"{len(only_b)} image(s) in {label_b} have no line in {label_a}: {listing(only_b)}")
    return DataError("; ".join(parts))


@dataclass
class ContestDownload:
    """An opened, name-checked contest download. Iterate examples with :meth:`examples`."""

    root: Path
    shape: tuple[int, int]
    train_masks: dict[str, str]  # name -> RLE, in train_mask.csv order
    test_names: list[str]  # sample-submit order
    _train: ImageArchive
    _test: ImageArchive | None

    @property
    def train_names(self) -> list[str]:
        return list(self.train_masks)

    def examples(self, split: str, names: list[str] | None = None) -> Iterator[ContestExample]:
        """Yield the examples of ``split`` ('train' or 'test'), checking each image."""
        if split == "train":
            folder, wanted = self._train, self.train_names if names is None else names
        elif split == "test":
            if self._test is None:
                return
            folder, wanted = self._test, self.test_names if names is None else names
        else:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        for name in wanted:
            data = folder.read(name)
            where = folder.describe(name)
            decode_image(data, where, strict=True, shape=self.shape)
            mask = decode_rle(self.train_masks[name], self.shape) if split == "train" else None
            yield ContestExample(name=name, image_bytes=data, mask=mask, source=where)


def open_contest(manual_dir, *, shape=CONTEST_SHAPE) -> ContestDownload:
    """Open the contest files in ``manual_dir`` (zips or extracted) and check names and RLE text.

    Raises :class:`DataError` naming the file (and line) of the first problem found.
    """
    root = Path(manual_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected the contest files {', '.join(CONTEST_FILES)})")
    train_dir = _find(root, "train.zip", "train")
    mask_csv = _find(root, "train_mask.csv.zip", "train_mask.csv")
    if train_dir is None or mask_csv is None:
        missing = [n for n, p in (("train.zip (or train/)", train_dir),
                                  ("train_mask.csv.zip (or train_mask.csv)", mask_csv)) if p is None]
        raise DataError(f"{root}: missing {' and '.join(missing)}")
    try:
        masks = read_submission(mask_csv, shape=shape)
    except SubmissionError as err:
        raise DataError(str(err)) from None
    if not masks:
        raise DataError(f"{mask_csv}: no mask lines")
    train = ImageArchive(train_dir, suffixes=IMAGE_SUFFIXES)
    only_csv = [n for n in masks if n not in train]
    only_img = [n for n in train.names if n not in masks]
    if only_csv or only_img:
        raise _name_mismatch(str(mask_csv), only_csv, str(train_dir), only_img)

    test_dir = _find(root, "test_a.zip", "test_a")
    sample = _find(root, "test_a_samplesubmit.csv", "test_a_samplesubmit.csv.zip")
    test, test_names = None, []
    if test_dir is not None:
        test = ImageArchive(test_dir, suffixes=IMAGE_SUFFIXES)
        if sample is not None:
            try:
                test_names = list(read_submission(sample))
            except SubmissionError as err:
                raise DataError(str(err)) from None
            only_csv = [n for n in test_names if n not in test]
            only_img = [n for n in test.names if n not in set(test_names)]
            if only_csv or only_img:
                raise _name_mismatch(str(sample), only_csv, str(test_dir), only_img)
        else:
            test_names = list(test.names)
    return ContestDownload(root=root, shape=tuple(shape), train_masks=masks, test_names=test_names,
                           _train=train, _test=test)
