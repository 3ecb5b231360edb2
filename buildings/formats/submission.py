"""Submission files (``name<TAB>rle`` lines) and the contest metric.

The Tianchi score is the mean over test images of the per-image Dice coefficient
``2|P∩T| / (|P| + |T|)``, with Dice = 1 when truth and prediction are both empty.

Reading is tolerant of what people and spreadsheets write (a header line, quoted fields or lines,
CRLF, trailing spaces, a comma instead of the tab); writing is strict (no header, ``\\n``, tab) and
atomic (a temporary file beside the target, renamed over it once complete).
"""

from __future__ import annotations

import contextlib
import csv
import io
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from buildings.errors import RLEError, SubmissionError, excerpt, shorten
from buildings.files import atomic_path
from buildings.formats.archives import open_zip, read_member
from buildings.formats.rle import CONTEST_SHAPE, decode_rle, validate_rle

__all__ = [
    "SubmissionError",
    "SubmissionScore",
    "image_dice",
    "image_iou",
    "mean_image_dice",
    "read_submission",
    "score_submission",
    "write_submission",
]


def _open_text(path: Path) -> str:
    """Text of a CSV, or of the single ``.csv`` inside a ``.zip`` (as ``train_mask.csv.zip``)."""
    if path.suffix.lower() == ".zip":
        with open_zip(path, SubmissionError) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".csv")]
            if len(members) != 1:
                raise SubmissionError(f"{path}: expected exactly one .csv inside, found "
                                      f"{len(members)}: {excerpt(members, 80)}")
            raw = read_member(archive, members[0], path, SubmissionError)
            where = f"{path}:{members[0]}"
    else:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise SubmissionError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise SubmissionError(f"{path}: a folder, not a name<TAB>rle file") from None
        where = str(path)
    nul = raw.find(b"\x00")
    if nul >= 0:
        raise SubmissionError(f"{where}: binary data (a NUL byte at offset {nul}), not a name<TAB>rle text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SubmissionError(f"{where}: not UTF-8 text (byte {err.start}: {excerpt(raw[err.start:err.start + 4])})") \
            from None


@contextlib.contextmanager
def _fields_of_any_length():
    """Let ``csv`` read fields of any length for a while: a valid RLE of a noisy 512x512 mask runs
    to 1.2 million characters, past csv's default limit of 131,072."""
    previous = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


_HEADER_NAMES = {"name", "image", "imageid", "image_id", "img", "id", "filename", "file"}


def _is_header(name: str, rle: str) -> bool:
    """A first line such as ``ImageId<TAB>EncodedPixels``; ``a.jpg<TAB>1 x`` is a bad row instead."""
    if name.lower() in _HEADER_NAMES:
        return True
    return any(ch.isalpha() for ch in rle) and "." not in name


def read_submission(path, *, shape=None) -> dict[str, str]:
    """Read a ``name<TAB>rle`` file (or a ``.zip`` holding one) into an ordered ``{name: rle}``.

    With ``shape`` every RLE is validated for that image shape. Any problem raises one
    :class:`SubmissionError` naming the file and line.
    """
    path = Path(path)
    text = _open_text(path)
    rows: dict[str, str] = {}
    first_line: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"')
    with _fields_of_any_length():
        end = 0
        for fields in reader:
            line, end = end + 1, reader.line_num  # the record spans lines line..end
            if any("\n" in f or "\r" in f for f in fields):
                raise SubmissionError(f"{path}:{line}: a quote (\") opens a field that does not close on "
                                      "this line")
            _read_row(path, line, fields, rows, first_line, shape)
    return rows


def _read_row(path, line: int, fields: list[str], rows: dict, first_line: dict, shape) -> None:
    fields = [f.strip() for f in fields]
    if len(fields) == 1 and "\t" in fields[0]:  # a whole line quoted: "name<TAB>rle"
        fields = [f.strip().strip('"') for f in fields[0].split("\t")]
    elif len(fields) == 1 and "," in fields[0]:  # comma-separated by mistake
        fields = [f.strip().strip('"') for f in fields[0].split(",", 1)]
    while len(fields) > 2 and fields[-1] == "":  # trailing tabs
        fields.pop()
    if not fields or fields == [""]:
        return
    if len(fields) > 2:
        raise SubmissionError(f"{path}:{line}: expected 'name<TAB>rle', found {len(fields)} fields: "
                              f"{excerpt(fields[:3], 80)}")
    name = fields[0]
    rle = fields[1] if len(fields) == 2 else ""
    if not rows and not first_line and _is_header(name, rle):
        first_line["<header>"] = line
        return
    if not name:
        raise SubmissionError(f"{path}:{line}: empty image name")
    if len(fields) == 1 and any(ch.isspace() for ch in name):
        raise SubmissionError(f"{path}:{line}: no tab between name and RLE in {excerpt(name)}")
    if name in rows:
        raise SubmissionError(f"{path}:{line}: image {shorten(name)!r} appears again (first on line {first_line[name]})")
    if shape is not None:
        try:
            validate_rle(rle, shape)
        except RLEError as err:
            raise SubmissionError(f"{path}:{line}: {shorten(name)}: {err}") from None
    rows[name] = rle
    first_line[name] = line


def write_submission(path, rows, *, shape=None) -> Path:
    """Write ``rows`` ({name: rle} or (name, rle) pairs) as ``name<TAB>rle`` lines, atomically.

    Nothing is written unless every row is valid (RLE checked against ``shape`` when given); the
    file appears complete or not at all.
    """
    path = Path(path)
    items = list(rows.items() if isinstance(rows, Mapping) else rows)
    seen: set[str] = set()
    for index, (name, rle) in enumerate(items, start=1):
        if not isinstance(name, str) or not name or any(c in name for c in "\t\r\n"):
            raise SubmissionError(f"row {index}: bad image name {name!r}")
        if name in seen:
            raise SubmissionError(f"row {index}: image {name!r} appears twice")
        seen.add(name)
        if shape is not None:
            try:
                validate_rle(rle, shape)
            except RLEError as err:
                raise SubmissionError(f"row {index}: {name}: {err}") from None
        elif not isinstance(rle, str):
            raise SubmissionError(f"row {index}: {name}: RLE must be a string, got {rle!r}")
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8", newline="\n") as out:
        for name, rle in items:
            out.write(f"{name}\t{rle}\n")
    return path


def image_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty (the contest rule)."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(truth))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & truth)) / total


def image_iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two binary masks; 1.0 when both are empty."""
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {pred.shape} vs {truth.shape}")
    union = int(np.count_nonzero(pred | truth))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(pred & truth)) / union


@dataclass(frozen=True)
class SubmissionScore:
    """Scores of a submission against the truth; ``dice`` is the contest score."""

    dice: float
    iou: float
    n_images: int
    n_truth_empty: int
    dice_with_buildings: float  # mean Dice over images whose truth has buildings (nan if none)
    empty_predicted_empty: int  # images with empty truth that the submission left empty
    per_image_dice: dict[str, float] = field(repr=False)

    def as_dict(self) -> dict:
        return {
            "dice": self.dice,
            "iou": self.iou,
            "n_images": self.n_images,
            "n_truth_empty": self.n_truth_empty,
            "dice_with_buildings": self.dice_with_buildings,
            "empty_predicted_empty": self.empty_predicted_empty,
        }


def _as_rows(source, shape, label: str) -> tuple[dict[str, str], str]:
    if isinstance(source, Mapping):
        return dict(source), label
    return read_submission(source, shape=shape), str(source)


def _check_same_names(pred: Mapping, truth: Mapping, pred_label: str, truth_label: str) -> None:
    missing = [n for n in truth if n not in pred]
    extra = [n for n in pred if n not in truth]
    if not (missing or extra):
        return

    def listing(names):
        shown = ", ".join(names[:10])
        return shown + (f", ... and {len(names) - 10} more" if len(names) > 10 else "")

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing from {pred_label} ({listing(missing)})")
    if extra:
        parts.append(f"{len(extra)} in {pred_label} but not in {truth_label} ({listing(extra)})")
    raise SubmissionError("image names differ: " + "; ".join(parts))


def score_submission(submission, truth, *, shape=CONTEST_SHAPE) -> SubmissionScore:
    """Score ``submission`` against ``truth``: each a path or a ``{name: rle}`` mapping."""
    pred_rows, pred_label = _as_rows(submission, shape, "the submission")
    true_rows, true_label = _as_rows(truth, shape, "the truth")
    _check_same_names(pred_rows, true_rows, pred_label, true_label)
    if not true_rows:
        raise SubmissionError(f"{true_label}: no images to score")
    dices, ious, dice_built = {}, [], []
    n_empty = empty_ok = 0
    for name, true_rle in true_rows.items():
        try:
            pred_mask = decode_rle(pred_rows[name], shape)
        except RLEError as err:
            raise SubmissionError(f"{pred_label}: {name}: {err}") from None
        true_mask = decode_rle(true_rle, shape)
        dice = image_dice(pred_mask, true_mask)
        dices[name] = dice
        ious.append(image_iou(pred_mask, true_mask))
        if true_mask.any():
            dice_built.append(dice)
        else:
            n_empty += 1
            empty_ok += int(not pred_mask.any())
    return SubmissionScore(
        dice=float(np.mean(list(dices.values()))),
        iou=float(np.mean(ious)),
        n_images=len(dices),
        n_truth_empty=n_empty,
        dice_with_buildings=float(np.mean(dice_built)) if dice_built else float("nan"),
        empty_predicted_empty=empty_ok,
        per_image_dice=dices,
    )


def mean_image_dice(submission, truth, *, shape=CONTEST_SHAPE) -> float:
    """The contest score: mean per-image Dice (1 when both empty)."""
    return score_submission(submission, truth, shape=shape).dice
