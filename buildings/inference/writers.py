"""Where predictions go: one context manager per output, each with ``add(name, image, mask)``.

* :class:`SubmissionFile` — the Tianchi ``name<TAB>rle`` file (binary masks);
* :class:`ResultZip` — a ``result.zip`` of label PNGs named like the images (地块分割);
* :class:`MaskFolder` / :class:`OverlayFolder` — one PNG per image: the mask, or the mask drawn
  over the image.

Each writes into a temporary file or folder beside its target and moves it into place only when
its ``with`` block ends without error; on error the temporary is removed, so a failed or
interrupted prediction leaves nothing that looks like output.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import ConfigError, DataError, OutputError
from buildings.files import TEMP_MARK, fsync_path, os_error_message, remove_stale_temporaries
from buildings.formats.label_maps import ResultZipWriter, result_name
from buildings.formats.rle import encode_rle
from buildings.formats.submission import write_submission
from buildings.task import Task

__all__ = ["MaskFolder", "OverlayFolder", "ResultZip", "SubmissionFile", "open_writers"]


class SubmissionFile:
    """The ``name<TAB>rle`` submission, written atomically when the block ends."""

    def __init__(self, path):
        self.path = Path(path)
        self.rows: dict[str, str] = {}

    def __enter__(self):
        return self

    what = "--out"

    def output_name(self, name: str) -> str:
        return name

    def output_paths(self, names) -> list[Path]:
        return [self.path]

    def add(self, name: str, image: np.ndarray, mask: np.ndarray) -> None:
        self.rows[name] = encode_rle(mask)

    def __exit__(self, kind, value, traceback):
        if kind is None:
            write_submission(self.path, self.rows)
        return False


class ResultZip:
    """A ``result.zip`` of single-channel label PNGs (``formats.label_maps.ResultZipWriter``)."""

    def __init__(self, path, task: Task):
        self.path = Path(path)
        if self.path.suffix.lower() != ".zip":
            raise ConfigError(f"{path}: a png-zip submission is a .zip file (result.zip)")
        self._writer = ResultZipWriter(self.path, num_classes=task.score_classes)

    def __enter__(self):
        self._writer.__enter__()
        return self

    what = "--out"

    def output_name(self, name: str) -> str:
        return result_name(name)

    def output_paths(self, names) -> list[Path]:
        return [self.path]

    def add(self, name: str, image: np.ndarray, mask: np.ndarray) -> None:
        self._writer.add(name, mask)

    def __exit__(self, kind, value, traceback):
        return self._writer.__exit__(kind, value, traceback)


class _PngFolder:
    """PNGs named ``<image stem>.png``, staged in a hidden folder beside ``folder`` and moved in
    (each file replaced atomically) when the block ends without error. Two images that would give
    the same PNG name (``a.jpg`` and ``a.png``) are refused, naming both."""

    def __init__(self, folder, task: Task):
        self.folder = Path(folder)
        self.task = task
        self._names: dict[str, str] = {}

    what = "--save-masks"

    def output_name(self, name: str) -> str:
        return f"{Path(name).stem}.png"

    def output_paths(self, names) -> list[Path]:
        return [self.folder / self.output_name(name) for name in names]

    def __enter__(self):
        try:
            self.folder.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder)
            self._staging = self.folder.parent / f".{self.folder.name}{TEMP_MARK}{os.getpid()}.{secrets.token_hex(4)}"
            self._staging.mkdir()
        except OSError as err:
            raise OutputError(os_error_message(err, self.folder)) from None
        return self

    def picture(self, name: str, image: np.ndarray, mask: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def add(self, name: str, image: np.ndarray, mask: np.ndarray) -> None:
        output = self.output_name(name)
        if output in self._names:
            raise DataError(f"images {self._names[output]!r} and {name!r} would both be written as "
                            f"{self.folder / output}")
        self._names[output] = name
        ok, data = cv2.imencode(".png", self.picture(name, image, mask))
        if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
            raise RuntimeError(f"PNG encoding failed for {name}")
        try:
            (self._staging / output).write_bytes(data.tobytes())
        except OSError as err:
            raise OutputError(os_error_message(err, self.folder / output)) from None

    def __exit__(self, kind, value, traceback):
        try:
            if kind is None:
                self.folder.mkdir(parents=True, exist_ok=True)
                for file in sorted(self._staging.iterdir()):
                    fsync_path(file)
                    os.replace(file, self.folder / file.name)
        except OSError as err:
            raise OutputError(os_error_message(err, self.folder)) from None
        finally:
            shutil.rmtree(self._staging, ignore_errors=True)
        return False


class MaskFolder(_PngFolder):
    """Mask PNGs: buildings white on black (0/255), or class indices."""

    def picture(self, name, image, mask):
        return self.task.mask_png(mask)


class OverlayFolder(_PngFolder):
    """The mask drawn over the image (buildings tinted and outlined, or class colours), above a
    caption with the tile's name and the legend (``visualize.overlay_tile``)."""

    what = "--save-overlays"

    def picture(self, name, image, mask):
        from buildings.visualize import overlay_tile

        return cv2.cvtColor(overlay_tile(name, image, mask, self.task), cv2.COLOR_RGB2BGR)


def open_writers(task: Task, out=None, *, output_format: str = "auto", save_masks=None,
                 save_overlays=None) -> list:
    """The writers for a prediction (not yet entered): the submission ``out`` in ``output_format``
    (``auto``: the task's, RLE for binary, result.zip for N classes), mask and overlay folders."""
    output_format = task.check_output_format(output_format)
    writers = []
    if out is not None:
        writers.append(SubmissionFile(out) if output_format == "rle" else ResultZip(out, task))
    if save_masks is not None:
        writers.append(MaskFolder(save_masks, task))
    if save_overlays is not None:
        writers.append(OverlayFolder(save_overlays, task))
    return writers
