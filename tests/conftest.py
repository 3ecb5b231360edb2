"""Shared fixtures. Real-data tests read ../shared/data/barnarp beside the checkout and are skipped,
with the reason, when it is absent (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any test module imports keras

from helpers import BARNARP  # noqa: E402


@pytest.fixture(scope="session")
def barnarp() -> Path:
    if not (BARNARP / "train_mask.csv.zip").is_file():
        pytest.skip(f"real barnarp data not found at {BARNARP}")
    return BARNARP


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


