"""Built datasets, opened for reading: ``open_split`` finds a built TFDS dataset (a TFDS name, a
data_dir, or a dataset folder) and returns a random-access :class:`SplitSource` of raw records (JPEG /
PNG bytes) that knows its :class:`~buildings.task.Task`; ``decode_record`` turns a record into
(RGB image, mask) with OpenCV, which is faster than TFDS's PIL path.

Every builder of this package writes the same features (``buildings.data.tfds.common``), so the
input pipeline, training, prediction and evaluation read any of them through this module alone.
No TensorFlow is needed: records come from ``tfds.data_source`` (array_record).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import ConfigError, DataError, DatasetNotFoundError
from buildings.formats.images import decode_image
from buildings.task import Task

__all__ = ["SplitSource", "decode_record", "fold_of", "kfold_sources", "open_split", "record_name", "resolve_dataset_dir",
           "split_items"]


@dataclass
class SplitSource:
    """A random-access split: ``len(source)``, ``source[i]`` → dict of raw record fields."""

    records: object
    name: str
    split: str
    directory: Path
    task: Task = Task(1)  # binary {0, 1} masks, or N classes with 255 = unlabelled

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        return self.records[index]

    @property
    def num_classes(self) -> int:
        return self.task.num_classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.task.class_names

    def __str__(self) -> str:
        return f"{self.directory} ({self.split})"

    @property
    def label(self) -> str:
        """Short name for figures: ``tianchi_buildings/val10`` (the builder config when there is one)."""
        config = self.directory.parent.name  # <data_dir>/<name>/<config>/<version> or <data_dir>/<name>/<version>
        return self.name if config == self.name else f"{self.name}/{config}"


def _dataset_dirs(root: Path) -> list[Path]:
    """Version folders (holding dataset_info.json) at or below ``root`` (depth ≤ 3)."""
    if (root / "dataset_info.json").is_file():
        return [root]
    found = []
    for depth in ("*", "*/*", "*/*/*"):
        found += [p.parent for p in sorted(root.glob(f"{depth}/dataset_info.json"))]
        if found:
            break
    return found


def resolve_dataset_dir(data: str | Path, data_dir: str | Path | None = None) -> Path:
    """Resolve ``data`` to one built dataset version folder.

    ``data`` is a folder (a version folder, a config folder, a dataset folder or a data_dir holding
    a single dataset) or a TFDS name such as ``tianchi_buildings`` or ``tianchi_buildings/val10``
    under ``data_dir`` (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).
    """
    path = Path(data).expanduser()
    if not path.exists():
        base = Path(data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")).expanduser()
        path = base / str(data)
        if not path.exists():
            raise DatasetNotFoundError(
                f"no dataset {data!r}: neither a folder nor {path}. Build it first with "
                "`buildings data build --manual-dir DIR` or `tfds build tfds_builder/tianchi_buildings "
                "--manual_dir DIR`."
            )
    found = _dataset_dirs(path)
    if not found:
        raise DatasetNotFoundError(f"{path}: no built TFDS dataset (no dataset_info.json) in it")
    if len(found) > 1:
        listing = ", ".join(str(p.relative_to(path)) for p in found)
        raise DatasetNotFoundError(f"{path} holds several datasets ({listing}): name one of them")
    return found[0]


def open_split(data: str | Path, split: str, data_dir: str | Path | None = None) -> SplitSource:
    """Open ``split`` of a built dataset for random access, records left encoded."""
    import tensorflow_datasets as tfds

    directory = resolve_dataset_dir(data, data_dir)
    builder = tfds.builder_from_directory(str(directory))
    if split not in builder.info.splits:
        raise ConfigError(f"{directory}: no split {split!r} (has {', '.join(builder.info.splits)})")
    decoders = {k: tfds.decode.SkipDecoding() for k in ("image", "mask") if k in builder.info.features}
    if builder.info.splits[split].num_examples == 0:  # TFDS would blame the file format
        raise ConfigError(f"{directory}: its {split} split has no images (split sizes: "
                          + ", ".join(f"{name} {info.num_examples}" for name, info in builder.info.splits.items())
                          + "); build it with a larger hold-out or pass another --split")
    try:
        records = builder.as_data_source(split=split, decoders=decoders)
    except (NotImplementedError, ValueError) as err:
        raise DatasetNotFoundError(
            f"{directory}: stored as {builder.info.file_format}, which has no random access; rebuild "
            f"with the default array_record format ({err})"
        ) from None
    metadata = builder.info.metadata or {}
    task = Task(int(metadata.get("num_classes", 1)), tuple(metadata.get("class_names", ())))
    return SplitSource(records=records, name=builder.name, split=split, directory=directory, task=task)


def record_name(record: dict) -> str:
    """The image file name stored in a record."""
    name = record["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def decode_record(record: dict) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 image (H, W, 3), uint8 mask (H, W)) from a raw record."""
    image = decode_image(record["image"], f"record {record_name(record)!r}")
    mask = cv2.imdecode(np.frombuffer(record["mask"], np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise DataError(f"record {record_name(record)!r}: undecodable mask")
    if mask.ndim == 3:
        mask = mask[..., 0]
    return image, mask


def split_items(source: SplitSource) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(name, loader) pairs of a split's images, in stored order (sample-submit order for test)."""
    for index in range(len(source)):
        record = source[index]
        yield record_name(record), (lambda r=record: decode_record(r)[0])


def labelled_items(source: SplitSource, purpose: str = "score") -> Iterator[tuple[str, Callable]]:
    """(name, loader of (image, truth)) pairs of a labelled split, in stored order; a split with an
    image without a mask is refused when that image is reached, naming the split and ``purpose``."""
    for index in range(len(source)):
        record = source[index]
        if not bool(record.get("has_mask", True)):
            raise ConfigError(f"split {source.split!r} of {source.directory} has images without masks: "
                              f"cannot {purpose} on it")
        yield record_name(record), (lambda r=record: decode_record(r))


# -- k-fold: the training split in N folds by a hash of the image name --------------------------------------
class _Picked:
    """Records ``picks`` (indices) of a source, as one random-access list."""

    def __init__(self, source: SplitSource, picks: list[int]):
        self.source, self.picks = source, picks

    def __len__(self) -> int:
        return len(self.picks)

    def __getitem__(self, index: int) -> dict:
        return self.source[self.picks[index]]


def fold_of(name: str, folds: int) -> int:
    """The fold (1..folds) of an image: bytes 4..8 of md5(name), so folds are independent of the
    validation hold-out (bytes 0..4) and stable when images are added or removed."""
    return int.from_bytes(hashlib.md5(name.encode("utf-8")).digest()[4:8], "big") % folds + 1


def kfold_sources(train: SplitSource, folds: int, fold: int) -> tuple[SplitSource, SplitSource]:
    """(training, validation) of fold ``fold`` of ``folds`` over the training split: validation is
    the images whose :func:`fold_of` is ``fold``, training all the others, so the ``folds`` runs
    validate on every training image exactly once. The dataset's own validation split stays out of
    all folds: the held-out set on which the bag of fold models can be tuned and scored."""
    if not 2 <= folds or not 1 <= fold <= folds:
        raise ConfigError(f"--fold must be 1..--folds (at least 2 folds), got fold {fold} of {folds}")
    picks = {True: [], False: []}
    for index in range(len(train)):
        picks[fold_of(record_name(train[index]), folds) == fold].append(index)
    if not picks[True] or not picks[False]:
        raise ConfigError(f"{train.directory}: fold {fold} of {folds} leaves {len(picks[True])} validation and "
                          f"{len(picks[False])} training images of {len(train)}; use fewer folds")
    label = f"fold {fold}/{folds}"
    return (SplitSource(records=_Picked(train, picks[False]), name=train.name, split=f"train ({label})",
                        directory=train.directory, task=train.task),
            SplitSource(records=_Picked(train, picks[True]), name=train.name, split=f"validation ({label})",
                        directory=train.directory, task=train.task))
