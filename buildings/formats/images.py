"""Reading images: one decoder and one reader of image collections for the whole project.

* :func:`decode_image`: encoded bytes → RGB uint8 (grayscale, RGBA, palette and 16-bit images are
  converted), with an optional strict check for downloads (a JPEG must end with its end-of-image
  marker, the image must have the expected size).
* :class:`ImageArchive`: the images of a folder (recursive), a zip (any sub-folder) or a single
  file, by base name, in sorted order, read lazily. The contest readers, ``buildings predict
  --images``, ``check-result`` and the label-map scorer all go through it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import DataError, ImageReadError

__all__ = ["IMAGE_SUFFIXES", "ImageArchive", "decode_image", "iter_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def decode_image(data: bytes, where: str, *, strict: bool = False, shape: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) from encoded bytes; :class:`ImageReadError` naming ``where`` otherwise.

    ``strict``: a JPEG must be complete (end-of-image marker present). ``shape``: (height, width)
    the image must have.
    """
    if strict and data[:2] == b"\xff\xd8" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise ImageReadError(f"{where}: truncated JPEG (no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{where}: not a decodable image ({len(data)} bytes)")
    if shape is not None and image.shape[:2] != tuple(shape):
        raise ImageReadError(f"{where}: image is {image.shape[1]}x{image.shape[0]} (WxH), "
                             f"expected {shape[1]}x{shape[0]}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageArchive:
    """The images of a folder (recursive), a ``.zip`` (any sub-folder) or a single image file.

    Images are known by base name (``names``, sorted); two images with the same base name in
    different sub-folders are refused, naming both. ``within`` keeps only images whose parent
    folder has that name (``lab_train`` inside ``train_and_label.zip``); ``suffixes`` which files
    count (None: every file).

        archive = ImageArchive("test_a.zip")
        for name in archive.names:
            image = archive.load(name)          # RGB uint8
    """

    def __init__(self, location, *, within: str | None = None, suffixes=IMAGE_SUFFIXES):
        self.location = Path(location)
        self._zip: zipfile.ZipFile | None = None
        if not self.location.exists():
            raise ImageReadError(f"{self.location}: no such image, folder or zip")
        wanted = (lambda name: True) if suffixes is None else (lambda name: name.lower().endswith(tuple(suffixes)))
        if self.location.is_dir():
            found = [(p.name, p) for p in sorted(self.location.rglob("*"))
                     if p.is_file() and wanted(p.name) and (within is None or p.parent.name == within)]
        elif self.location.suffix.lower() == ".zip":
            try:
                self._zip = zipfile.ZipFile(self.location)
            except (zipfile.BadZipFile, OSError) as err:
                raise DataError(f"{self.location}: not a readable zip file ({err})") from None
            found = [(Path(m).name, m) for m in sorted(self._zip.namelist())
                     if not m.endswith("/") and "__MACOSX" not in m and wanted(m)
                     and (within is None or Path(m).parent.name == within)]
        else:
            found = [(self.location.name, self.location)]
        self._paths: dict[str, object] = {}
        for name, where in found:
            if name in self._paths:
                raise DataError(f"{self.location}: two images named {name!r}: {self._paths[name]} and {where}")
            self._paths[name] = where
        self.names = sorted(self._paths)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: str) -> bool:
        return name in self._paths

    def read(self, name: str) -> bytes:
        """The encoded bytes of image ``name``."""
        where = self._paths[name]
        if self._zip is not None:
            return self._zip.read(where)
        return Path(where).read_bytes()

    def describe(self, name: str) -> str:
        """Where image ``name`` lives, for messages: ``archive.zip:folder/name.jpg`` or a path."""
        return f"{self.location}:{self._paths[name]}" if self._zip is not None else str(self._paths[name])

    def load(self, name: str, **checks) -> np.ndarray:
        """Image ``name`` as RGB uint8 (``checks``: see :func:`decode_image`)."""
        return decode_image(self.read(name), self.describe(name), **checks)

    def items(self) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
        """(name, loader) pairs, sorted by name; each loader reads and decodes one image."""
        for name in self.names:
            yield name, (lambda n=name: self.load(n))

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def iter_images(source) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(name, loader) for the images of a file, a folder or a zip, sorted; an empty folder is refused."""
    archive = ImageArchive(source)
    if not archive.names:
        raise ImageReadError(f"{archive.location}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    yield from archive.items()
