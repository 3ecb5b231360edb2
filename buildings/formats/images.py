"""Reading images: one decoder and one reader of image collections for the whole project.

* :func:`decode_image`: encoded bytes → RGB uint8 (grayscale, RGBA, palette and 16-bit images are
  converted). JPEGs are decoded by libjpeg-turbo through ``simplejpeg`` in strict mode, where every
  libjpeg warning is an error: a JPEG whose entropy-coded data is damaged decodes with OpenCV into
  garbage pixels and a "Corrupt JPEG data" line on stderr, here it is refused naming the file.
* :class:`ImageArchive`: the images of a folder (recursive), a zip (any sub-folder) or a single
  file, by base name, in sorted order, read lazily. The contest readers, ``buildings predict
  --images``, ``check-result`` and the label-map scorer all go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from buildings.errors import DataError, ImageReadError
from buildings.formats.archives import open_zip, read_member

__all__ = ["IMAGE_SUFFIXES", "ImageArchive", "decode_image", "iter_images", "open_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


def decode_image(data: bytes, where: str, *, shape: tuple[int, int] | None = None, strict: bool = True) -> np.ndarray:
    """RGB uint8 (H, W, 3) from encoded bytes; :class:`ImageReadError` naming ``where`` otherwise.

    ``strict`` (default): a JPEG with any libjpeg warning (truncated, damaged scan data) is refused.
    ``shape``: (height, width) the image must have.
    """
    if not len(data):
        raise ImageReadError(f"{where}: empty file (0 bytes)")
    image = None
    if strict and bytes(data[:3]) == b"\xff\xd8\xff":
        try:
            image = simplejpeg.decode_jpeg(data, colorspace="RGB", strict=True)
        except ValueError as err:
            reason = str(err).strip()[:120]
            kind = "truncated" if "Premature end" in reason else "corrupt"
            raise ImageReadError(f"{where}: {kind} JPEG ({reason})") from None
    if image is None:
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if decoded is None:
            raise ImageReadError(f"{where}: not a decodable image ({len(data)} bytes)")
        image = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if shape is not None and image.shape[:2] != tuple(shape):
        raise ImageReadError(f"{where}: image is {image.shape[1]}x{image.shape[0]} (WxH), "
                             f"expected {shape[1]}x{shape[0]}")
    return image


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
        self._zip = None  # a zipfile.ZipFile when the location is a zip
        if not self.location.exists():
            raise ImageReadError(f"{self.location}: no such image, folder or zip")
        wanted = (lambda name: True) if suffixes is None else (lambda name: name.lower().endswith(tuple(suffixes)))
        if self.location.is_dir():
            found = [(p.name, p) for p in sorted(self.location.rglob("*"))
                     if p.is_file() and wanted(p.name) and (within is None or p.parent.name == within)]
        elif self.location.suffix.lower() == ".zip":
            self._zip = open_zip(self.location)
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
            return read_member(self._zip, where, self.location)
        return Path(where).read_bytes()

    def describe(self, name: str) -> str:
        """Where image ``name`` lives, for messages: ``archive.zip:folder/name.jpg`` or a path."""
        return f"{self.location}:{self._paths[name]}" if self._zip is not None else str(self._paths[name])

    def load(self, name: str, **checks) -> np.ndarray:
        """Image ``name`` as RGB uint8 (``checks``: see :func:`decode_image`)."""
        return decode_image(self.read(name), self.describe(name), **checks)

    def files(self) -> list[Path]:
        """The files it reads: the zip, or each image file."""
        return [self.location] if self._zip is not None else [Path(p) for p in self._paths.values()]

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


def open_images(source) -> ImageArchive:
    """The images of a file, a folder or a zip; an empty folder is refused."""
    archive = ImageArchive(source)
    if not archive.names:
        raise ImageReadError(f"{archive.location}: no images ({', '.join(IMAGE_SUFFIXES)}) in it")
    return archive


def iter_images(source) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(name, loader) for the images of a file, a folder or a zip, sorted; an empty folder is refused."""
    yield from open_images(source).items()
