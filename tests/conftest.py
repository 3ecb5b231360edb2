"""Shared fixtures. Real-data tests read ../shared/data/barnarp beside the checkout and are skipped,
with the reason, when it is absent (never copied into the project)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any test module imports keras

ROOT = Path(__file__).resolve().parents[1]
BARNARP = Path(os.environ.get("BUILDINGS_BARNARP", ROOT.parent / "shared" / "data" / "barnarp"))


@pytest.fixture(scope="session")
def barnarp() -> Path:
    if not (BARNARP / "train_mask.csv.zip").is_file():
        pytest.skip(f"real barnarp data not found at {BARNARP}")
    return BARNARP


def raw_mask_lines(path: Path) -> list[tuple[str, str]]:
    """The (name, rle) pairs of a barnarp mask CSV read the simplest way, independent of
    buildings.submission, so tests can compare the library against it."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            text = archive.read(archive.namelist()[0]).decode()
    else:
        text = path.read_text()
    return [tuple(line.split("\t")) for line in text.splitlines() if line]


@pytest.fixture(scope="session")
def synth_contest(tmp_path_factory) -> Path:
    """A small synthetic contest download (9 train + 3 test tiles), made by the project itself."""
    from buildings.data.synth import write_synthetic_contest

    out = tmp_path_factory.mktemp("synth_contest")
    write_synthetic_contest(out, n=12, seed=3)
    return out


@pytest.fixture(scope="session")
def synth_dataset(synth_contest, tmp_path_factory) -> Path:
    """The synthetic download built as tianchi_buildings/val20 (array_record); its version folder."""
    from buildings.data.tfds.tianchi_buildings import build_dataset

    return build_dataset(synth_contest, tmp_path_factory.mktemp("tfds"), config="val20")


def damage_jpeg(data: bytes) -> bytes:
    """A JPEG whose entropy-coded scan data is damaged while its structure (headers, start of
    scan, end of image) stays intact: two bytes a third of the way into the scan become a stray
    restart marker, as a flipped bit can make. libjpeg still decodes it: OpenCV returns the image,
    wrong from there on, and only prints "Corrupt JPEG data: premature end of data segment" on
    stderr. (Measured: detected by strict decoding in all of 69 synthetic and barnarp tiles.)"""
    start = data.index(b"\xff\xda")  # start of scan
    at = start + (len(data) - start) // 3
    return data[:at] + b"\xff\xd3" + data[at + 2:]


def rezip(source: Path, target: Path, edit) -> Path:
    """A copy of zip ``source`` at ``target`` with each member's bytes passed through
    ``edit(name, data)`` (return None to drop the member)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for info in archive.infolist():
            data = edit(info.filename, archive.read(info))
            if data is not None:
                out.writestr(info, data)
    return target


def score_back(submission: Path, shape=(512, 512)) -> dict:
    """``buildings score`` reading back a submission that ``buildings predict`` wrote (scored
    against itself: every image must decode, and the score is 1)."""
    import json

    from click.testing import CliRunner

    from buildings.cli import main

    result = CliRunner().invoke(main, ["score", str(submission), str(submission), "--shape",
                                       f"{shape[0]}x{shape[1]}", "--json"])
    assert result.exit_code == 0, result.output[-2000:]
    scores = json.loads(result.output)
    assert scores["dice"] == 1.0
    return scores
