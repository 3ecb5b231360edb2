"""Reading a multi-class folder dataset in the CCF BDCI 遥感影像地块分割 layout, as users have it.

    img_train/T000123.jpg   training images (any size; 256x256 in that contest)
    lab_train/T000123.png   their labels: single-channel class indices 0..N-1, 255 = unlabelled
    img_testA/T200001.jpg   test images (img_testB/ or img_test/ also accepted)

Each of the three may be a folder, a zip of the same name (``img_train.zip``), or a folder of that
name inside any zip of the manual folder (``train_and_label.zip`` holding ``img_train/`` and
``lab_train/``). This is the one reader of that layout: the TFDS builder ``land_parcels`` calls it.

Names are matched up front (every image needs its label and every label its image, by file stem);
images and labels are checked as they are read: the JPEG is whole and decodable, the label is a
single-channel PNG of the image's size whose values are class indices or 255.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildings.errors import ConfigError, DataError, LabelMapError
from buildings.formats.images import ImageArchive, decode_image
from buildings.formats.label_maps import check_labels, decode_label_png
from buildings.formats.rle import CONTEST_SHAPE

__all__ = ["CLASS_NAMES", "LandParcelsDownload", "ParcelExample", "class_names_for", "contest_to_folders",
           "open_land_parcels"]

# English names (used in metric names and logs); the contest's Chinese names in the comments.
CLASS_NAMES = {
    2: ("background", "building"),
    4: ("building", "farmland", "forest", "other"),  # 建筑, 耕地, 林地, 其他
    7: ("building", "farmland", "forest", "water", "road", "grass", "other"),  # + 水体, 道路, 草地
}
TRAIN_IMAGES, TRAIN_LABELS = "img_train", "lab_train"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
TEST_IMAGES = ("img_testA", "img_testB", "img_test")


def class_names_for(num_classes: int) -> tuple[str, ...]:
    """The contest's class names for 2, 4 or 7 classes; ``class0``.. otherwise."""
    return CLASS_NAMES.get(num_classes, tuple(f"class{i}" for i in range(num_classes)))


@dataclass(frozen=True)
class ParcelExample:
    name: str
    image_bytes: bytes  # the original file bytes, never re-encoded
    labels: np.ndarray | None  # (H, W) uint8 class indices / 255; None for test images
    shape: tuple[int, int]  # the image's (height, width)
    source: str


def _locate(root: Path, part: str) -> ImageArchive | None:
    """``part`` as a folder, as ``part.zip``, or as a sub-folder inside a zip or folder of ``root``."""
    for candidate in (root / part, root / f"{part}.zip"):
        if candidate.exists():
            return ImageArchive(candidate, suffixes=IMAGE_SUFFIXES)
    for archive in sorted(root.glob("*.zip")):
        folder = ImageArchive(archive, within=part, suffixes=IMAGE_SUFFIXES)
        if folder.names:
            return folder
    folder = ImageArchive(root, within=part, suffixes=IMAGE_SUFFIXES)
    return folder if folder.names else None


def _by_stem(folder: ImageArchive) -> dict[str, str]:
    stems: dict[str, str] = {}
    for name in folder.names:
        stem = Path(name).stem
        if stem in stems:
            raise DataError(f"{folder.location}: {stems[stem]} and {name} have the same stem")
        stems[stem] = name
    return stems


@dataclass
class LandParcelsDownload:
    """An opened, name-checked folder dataset. Iterate examples with :meth:`examples`."""

    root: Path
    num_classes: int
    train_names: list[str]  # image file names, sorted
    test_names: list[str]
    _images: ImageArchive
    _labels: ImageArchive
    _label_of: dict[str, str]  # image name -> label file name
    _test: ImageArchive | None

    def examples(self, split: str, names: list[str] | None = None) -> Iterator[ParcelExample]:
        """Yield the examples of ``split`` ('train' or 'test'), checking each image and label."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        folder = self._images if split == "train" else self._test
        if folder is None:
            return
        for name in (self.train_names if split == "train" else self.test_names) if names is None else names:
            data = folder.read(name)
            where = folder.describe(name)
            image = decode_image(data, where, strict=True)
            labels = None
            if split == "train":
                label_name = self._label_of[name]
                label_where = self._labels.describe(label_name)
                try:
                    labels = decode_label_png(self._labels.read(label_name), label_where)
                    check_labels(labels, self.num_classes, label_where)
                except LabelMapError as err:
                    raise DataError(str(err)) from None
                if labels.shape != image.shape[:2]:
                    raise DataError(
                        f"{label_where}: label is {labels.shape[1]}x{labels.shape[0]} (WxH) but its image "
                        f"{name} is {image.shape[1]}x{image.shape[0]}")
            yield ParcelExample(name=name, image_bytes=data, labels=labels, shape=image.shape[:2], source=where)


def open_land_parcels(manual_dir, *, num_classes: int = 4) -> LandParcelsDownload:
    """Open ``img_train`` / ``lab_train`` / ``img_testA`` under ``manual_dir`` and match names.

    Raises :class:`DataError` naming what is missing or unmatched.
    """
    if num_classes < 2 or num_classes > 255:
        raise ConfigError(f"num_classes must be in 2..255 for a multi-class dataset, got {num_classes}")
    root = Path(manual_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: no such folder (expected {TRAIN_IMAGES}/, {TRAIN_LABELS}/ and "
                               f"{TEST_IMAGES[0]}/ in it)")
    images = _locate(root, TRAIN_IMAGES)
    labels = _locate(root, TRAIN_LABELS)
    if images is None or labels is None:
        missing = [p for p, f in ((TRAIN_IMAGES, images), (TRAIN_LABELS, labels)) if f is None]
        raise DataError(f"{root}: no {' and no '.join(missing)} (as a folder, a .zip, or a folder "
                               "inside a zip) with images in it")
    image_stems, label_stems = _by_stem(images), _by_stem(labels)
    not_png = [n for n in label_stems.values() if not n.lower().endswith(".png")]
    if not_png:
        raise DataError(f"{labels.location}: labels must be PNG, found {', '.join(not_png[:5])}")
    only_images = sorted(image_stems[s] for s in set(image_stems) - set(label_stems))
    only_labels = sorted(label_stems[s] for s in set(label_stems) - set(image_stems))
    if only_images or only_labels:
        parts = []
        if only_images:
            parts.append(f"{len(only_images)} image(s) in {images.location} have no label in {labels.location}: "
                         + ", ".join(only_images[:5]))
        if only_labels:
            parts.append(f"{len(only_labels)} label(s) in {labels.location} have no image in {images.location}: "
                         + ", ".join(only_labels[:5]))
        raise DataError("; ".join(parts))
    test = next((f for f in (_locate(root, part) for part in TEST_IMAGES) if f is not None), None)
    train_names = list(images.names)
    return LandParcelsDownload(
        root=root, num_classes=num_classes, train_names=train_names,
        test_names=list(test.names) if test is not None else [], _images=images, _labels=labels,
        _label_of={name: label_stems[Path(name).stem] for name in train_names}, _test=test)


def contest_to_folders(manual_dir, out, *, shape=CONTEST_SHAPE) -> dict[str, Path]:
    """Write a binary Tianchi download (``manual_dir``) in this folder layout as 2 classes (0
    background, 1 building): ``img_train/`` + ``lab_train/`` from train, ``img_testA/`` from test
    (and ``lab_testA/`` from ``test_a_mask.csv`` when present, for local scoring). JPEG bytes are
    copied as they are. Used to check that the multi-class path matches the binary one."""
    from buildings.data.contest import open_contest
    from buildings.files import write_bytes
    from buildings.formats.label_maps import encode_label_png
    from buildings.formats.rle import decode_rle
    from buildings.formats.submission import read_submission

    download = open_contest(manual_dir, shape=shape)
    out = Path(out)
    folders = {key: out / key for key in ("img_train", "lab_train", "img_testA", "lab_testA")}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    for item in download.examples("train"):
        write_bytes(folders["img_train"] / item.name, item.image_bytes)
        write_bytes(folders["lab_train"] / f"{Path(item.name).stem}.png", encode_label_png(item.mask))
    for item in download.examples("test"):
        write_bytes(folders["img_testA"] / item.name, item.image_bytes)
    truth = Path(manual_dir) / "test_a_mask.csv"
    if truth.is_file():
        for name, rle in read_submission(truth, shape=shape).items():
            write_bytes(folders["lab_testA"] / f"{Path(name).stem}.png", encode_label_png(decode_rle(rle, shape)))
    else:
        folders.pop("lab_testA").rmdir()
    return folders
