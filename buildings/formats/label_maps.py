"""Label maps: single-channel PNGs of class indices, as the multi-class contests ship them and take
them back (CCF BDCI / PaddlePaddle 遥感影像地块分割: ``lab_train/*.png`` for training, a
``result.zip`` of predictions to submit).

* Values are class indices 0..N-1; 255 marks unlabelled pixels in training labels and is ignored
  by losses, metrics and scores. A prediction never holds 255.
* ``result.zip``: one PNG per test image, named like the image with a ``.png`` suffix
  (``T000123.jpg`` → ``T000123.png``), at the root of the zip, same height and width as the image.
* The score: a confusion matrix pooled over all pixels of all images (255 left out), giving
  per-class IoU, mean IoU (over classes present in truth or prediction), frequency-weighted IoU
  and pixel accuracy.

This is the multi-class counterpart of :mod:`buildings.formats.submission` (RLE CSVs for the binary
contest).
"""

from __future__ import annotations

import contextlib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import BuildingsError, LabelMapError, OutputError
from buildings.files import atomic_path, os_error_message
from buildings.formats.archives import open_zip, read_member
from buildings.formats.images import ImageArchive
from buildings.task import IGNORE_INDEX

__all__ = [
    "LabelMapError",
    "LabelScore",
    "ResultZipWriter",
    "check_labels",
    "check_result_zip",
    "confusion_matrix",
    "decode_label_png",
    "encode_label_png",
    "is_label_map_source",
    "iter_label_maps",
    "result_name",
    "score_confusion",
    "score_label_maps",
]

def encode_label_png(labels: np.ndarray) -> bytes:
    """Single-channel 8-bit PNG bytes of a (H, W) label map."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"a label map is (height, width), got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label values must fit in 0..255, got {labels.min()}..{labels.max()}")
    ok, data = cv2.imencode(".png", np.ascontiguousarray(labels, dtype=np.uint8))
    if not ok:  # pragma: no cover - cv2 only fails on invalid arrays
        raise RuntimeError("PNG encoding of a label map failed")
    return data.tobytes()


def decode_label_png(data: bytes, where: str) -> np.ndarray:
    """(H, W) uint8 class indices from PNG bytes. A 3- or 4-channel PNG is accepted only when its
    colour channels are equal (a grey image saved as RGB); a colour-coded label image is refused."""
    labels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise LabelMapError(f"{where}: not a decodable PNG ({len(data)} bytes)")
    if labels.ndim == 3:
        colour = labels[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            raise LabelMapError(f"{where}: a {labels.shape[2]}-channel colour image; labels must be "
                                "single-channel class indices")
        labels = colour[..., 0]
    if labels.dtype != np.uint8:
        if labels.max(initial=0) > 255:
            raise LabelMapError(f"{where}: {labels.dtype} values up to {labels.max()}; labels must be 0..255")
        labels = labels.astype(np.uint8)
    return labels


def check_labels(labels: np.ndarray, num_classes: int, where: str, *, allow_ignore: bool = True) -> None:
    """Raise :class:`LabelMapError` naming ``where`` and the offending values unless every value is a
    class index 0..num_classes-1 (or 255 when ``allow_ignore``)."""
    values = np.unique(labels)
    bad = values[(values >= num_classes) & ~((values == IGNORE_INDEX) & allow_ignore)]
    if bad.size:
        count = int(np.isin(labels, bad).sum())
        allowed = f"0..{num_classes - 1}" + (" or 255 (unlabelled)" if allow_ignore else "")
        shown = ", ".join(str(int(v)) for v in bad[:8]) + (", ..." if bad.size > 8 else "")
        raise LabelMapError(f"{where}: value(s) {shown} in {count} pixel(s); expected {allowed} "
                            f"for {num_classes} classes")


def result_name(image_name: str) -> str:
    """The result PNG's name for a test image: same stem, ``.png``."""
    return f"{Path(image_name).stem}.png"


class ResultZipWriter:
    """Writes ``result.zip`` one label map at a time, atomically: the zip is built under a temporary
    name beside ``path`` (``buildings.files.atomic_path``) and renamed only when the ``with`` block
    ends without error; on error, or an operating-system failure, nothing is left.

        with ResultZipWriter("result.zip", num_classes=4) as result:
            result.add("T000123.jpg", labels)
    """

    def __init__(self, path, num_classes: int):
        self.path = Path(path)
        self.num_classes = num_classes
        self.names: list[str] = []

    def __enter__(self):
        self._stack = contextlib.ExitStack()
        try:
            temporary = self._stack.enter_context(atomic_path(self.path))
            self._zip = self._stack.enter_context(zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED))
        except BaseException:
            self._stack.close()
            raise
        self._seen: dict[str, str] = {}
        return self

    def add(self, image_name: str, labels: np.ndarray) -> None:
        member = result_name(image_name)
        if member in self._seen:
            raise LabelMapError(f"test images {self._seen[member]!r} and {image_name!r} would both be written "
                                f"as {member!r}")
        check_labels(labels, self.num_classes, f"prediction for {image_name}", allow_ignore=False)
        try:
            self._zip.writestr(member, encode_label_png(labels))
        except OSError as err:
            raise OutputError(os_error_message(err, self.path)) from None
        self._seen[member] = image_name
        self.names.append(member)

    def __exit__(self, kind, value, traceback):
        return self._stack.__exit__(kind, value, traceback)


def iter_label_maps(source) -> Iterator[tuple[str, str, bytes]]:
    """(stem, where, PNG bytes) of the files in a folder (recursive) or a zip, sorted by name."""
    path = Path(source)
    if not (path.is_dir() or path.suffix.lower() == ".zip"):
        raise LabelMapError(f"{path}: expected a folder or a .zip of PNG label maps")
    try:
        archive = ImageArchive(path, suffixes=(".png",) if path.is_dir() else None)
    except BuildingsError as err:
        raise LabelMapError(str(err)) from None
    with archive:
        for name in archive.names:
            yield Path(name).stem, archive.describe(name), archive.read(name)


def is_label_map_source(path) -> bool:
    """A folder, or a zip holding PNGs (a result.zip), rather than an RLE file."""
    path = Path(path)
    if path.is_dir():
        return True
    if zipfile.is_zipfile(path):
        with open_zip(path, LabelMapError) as archive:
            return any(m.lower().endswith(".png") for m in archive.namelist())
    return False


@dataclass
class ResultCheck:
    n_files: int
    class_pixels: list[int]  # predicted pixels per class, over all files


def check_result_zip(path, images: Mapping[str, tuple[int, int]], num_classes: int) -> ResultCheck:
    """Check a ``result.zip`` against the contest rules for the test images ``images``
    ({image name: (height, width)}): one PNG per image, named ``<stem>.png``, nothing else,
    single-channel 8-bit, the image's height and width, values 0..num_classes-1.
    Raises :class:`LabelMapError` on the first broken rule (missing or extra names are listed)."""
    path = Path(path)
    if path.suffix.lower() != ".zip" or not path.is_file():
        raise LabelMapError(f"{path}: not a zip file")
    expected = {result_name(name): shape for name, shape in images.items()}
    with open_zip(path, LabelMapError) as archive:
        members = [m for m in archive.namelist() if not m.endswith("/")]
        nested = [m for m in members if "/" in m]
        if nested:
            raise LabelMapError(f"{path}: {len(nested)} file(s) inside folders (e.g. {nested[0]!r}); "
                                "the PNGs go at the root of the zip")
        missing = sorted(set(expected) - set(members))
        extra = sorted(set(members) - set(expected))
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"{len(missing)} test image(s) have no PNG: {', '.join(missing[:5])}")
            if extra:
                parts.append(f"{len(extra)} file(s) match no test image: {', '.join(extra[:5])}")
            raise LabelMapError(f"{path}: {len(members)} files for {len(expected)} test images; "
                                + "; ".join(parts))
        counts = np.zeros(num_classes, np.int64)
        for member in members:
            where = f"{path}:{member}"
            data = read_member(archive, member, path, LabelMapError)
            labels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if labels is None or not data.startswith(b"\x89PNG"):
                raise LabelMapError(f"{where}: not a PNG")
            if labels.ndim != 2 or labels.dtype != np.uint8:
                raise LabelMapError(f"{where}: must be single-channel 8-bit, got shape {labels.shape} "
                                    f"{labels.dtype}")
            if labels.shape != tuple(expected[member]):
                h, w = expected[member]
                raise LabelMapError(f"{where}: {labels.shape[1]}x{labels.shape[0]} (WxH), the test image "
                                    f"is {w}x{h}")
            check_labels(labels, num_classes, where, allow_ignore=False)
            counts += np.bincount(labels.ravel(), minlength=num_classes)[:num_classes]
    return ResultCheck(n_files=len(members), class_pixels=counts.tolist())


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) int64 counts, rows = truth, columns = prediction; truth 255 left out."""
    truth = np.asarray(truth).ravel()
    pred = np.asarray(pred).ravel()
    if truth.shape != pred.shape:
        raise ValueError(f"truth has {truth.size} pixels, prediction {pred.size}")
    valid = truth != IGNORE_INDEX
    index = truth[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass
class LabelScore:
    """Scores from a pooled confusion matrix. ``class_iou`` is NaN for classes absent from both
    truth and prediction; ``miou`` averages the others."""

    class_iou: list[float]
    miou: float
    fwiou: float
    accuracy: float
    n_images: int
    confusion: list[list[int]]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def score_confusion(confusion: np.ndarray, n_images: int = 0) -> LabelScore:
    confusion = np.asarray(confusion, np.float64)
    diagonal = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - diagonal
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, diagonal / np.maximum(union, 1), np.nan)
    frequency = confusion.sum(1) / max(confusion.sum(), 1)
    present = union > 0
    return LabelScore(
        class_iou=[float(v) for v in iou],
        miou=float(iou[present].mean()) if present.any() else float("nan"),
        fwiou=float(np.nansum(frequency * np.nan_to_num(iou))),
        accuracy=float(diagonal.sum() / max(confusion.sum(), 1)),
        n_images=n_images, confusion=confusion.astype(np.int64).tolist())


def score_label_maps(prediction, truth, num_classes: int) -> LabelScore:
    """Score a ``result.zip`` (or a folder of PNGs) against truth label maps (a folder or zip, e.g.
    ``lab_train``), matched by file stem. Every truth map needs a prediction of the same size."""
    truths = {stem: (where, data) for stem, where, data in iter_label_maps(truth)}
    if not truths:
        raise LabelMapError(f"{truth}: no PNG label maps")
    confusion = np.zeros((num_classes, num_classes), np.int64)
    seen = set()
    for stem, where, data in iter_label_maps(prediction):
        if stem not in truths:
            raise LabelMapError(f"{where}: no truth label map named {stem}.png in {truth}")
        pred = decode_label_png(data, where)
        check_labels(pred, num_classes, where, allow_ignore=False)
        truth_where, truth_data = truths[stem]
        true = decode_label_png(truth_data, truth_where)
        check_labels(true, num_classes, truth_where)
        if pred.shape != true.shape:
            raise LabelMapError(f"{where}: {pred.shape[1]}x{pred.shape[0]} (WxH), truth is "
                                f"{true.shape[1]}x{true.shape[0]}")
        confusion += confusion_matrix(true, pred, num_classes)
        seen.add(stem)
    missing = sorted(set(truths) - seen)
    if missing:
        raise LabelMapError(f"{prediction}: no prediction for {len(missing)} truth map(s): "
                            f"{', '.join(m + '.png' for m in missing[:5])}")
    return score_confusion(confusion, len(seen))
