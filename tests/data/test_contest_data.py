"""The contest reader, the TFDS builder (both ways to build) and bad-data handling."""

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import ROOT, raw_mask_lines

from buildings.data.contest import open_contest
from buildings.data.splits import decode_record, open_split
from buildings.data.tfds.tianchi_buildings import build_dataset, is_validation
from buildings.errors import ConfigError, DataError, DatasetNotFoundError
from buildings.formats.rle import decode_rle


def extract_copy(src: Path, dst: Path) -> Path:
    """The same download, extracted (train/, train_mask.csv, test_a/)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("train.zip", "test_a.zip", "train_mask.csv.zip"):
        with zipfile.ZipFile(src / name) as archive:
            archive.extractall(dst)
    shutil.copy(src / "test_a_samplesubmit.csv", dst)
    return dst


def zipped_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rewrite_zip(path: Path, edit) -> None:
    """Rewrite a zip's members through ``edit({name: bytes}) -> {name: bytes}``."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members = edit(members)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())


def test_zips_and_extracted_read_the_same(synth_contest, tmp_path):
    zipped = open_contest(synth_contest)
    extracted = open_contest(extract_copy(synth_contest, tmp_path / "x"))
    assert zipped.train_masks == extracted.train_masks
    assert zipped.test_names == extracted.test_names
    assert len(zipped.train_names) == 9 and len(zipped.test_names) == 3
    for a, b in zip(zipped.examples("train"), extracted.examples("train"), strict=True):
        assert a.name == b.name and a.image_bytes == b.image_bytes
        np.testing.assert_array_equal(a.mask, b.mask)


def test_validation_holdout_is_deterministic_and_near_its_fraction():
    names = [f"{i:05d}.jpg" for i in range(4000)]
    chosen = [n for n in names if is_validation(n, 10)]
    assert chosen == [n for n in names if is_validation(n, 10)]
    assert 0.08 < len(chosen) / len(names) < 0.12
    assert set(n for n in names if is_validation(n, 5)) <= set(chosen)  # nested fractions


def test_builder_splits_and_examples(synth_contest, synth_dataset):
    download = open_contest(synth_contest)
    train, validation, test = (open_split(synth_dataset, s) for s in ("train", "validation", "test"))
    assert len(train) + len(validation) == len(download.train_names)
    assert [r["name"].decode() for r in (test[i] for i in range(len(test)))] == download.test_names
    originals = {e.name: e for e in download.examples("train")}
    for source in (train, validation):
        for i in range(len(source)):
            record = source[i]
            name = record["name"].decode()
            assert record["image"] == originals[name].image_bytes  # JPEG stored as-is
            image, mask = decode_record(record)
            assert image.shape == (512, 512, 3) and mask.dtype == np.uint8
            np.testing.assert_array_equal(mask, decode_rle(download.train_masks[name]))
            assert bool(record["has_mask"])
    assert not any(bool(test[i]["has_mask"]) for i in range(len(test)))


def test_dataset_lookup_errors(tmp_path, synth_dataset):
    with pytest.raises(DatasetNotFoundError, match="Build it first"):
        open_split("no_such_dataset", "train", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="no built TFDS dataset"):
        open_split(tmp_path, "train")
    with pytest.raises(ValueError, match="no split 'bogus'"):
        open_split(synth_dataset, "bogus")
    # a data_dir path, a dataset folder and a name under a data_dir all reach the same folder
    data_dir = synth_dataset.parents[2]
    assert open_split("tianchi_buildings", "train", data_dir=data_dir).directory == synth_dataset
    assert open_split(data_dir, "train").directory == synth_dataset


# ---- bad data: one clear error naming the file (and line), nothing half-built -------------------

def _drop_first_image(members):
    first = next(n for n in members if n.endswith(".jpg"))
    return {n: d for n, d in members.items() if n != first}


def _extra_image(members):
    members = dict(members)
    members["train/stray_image.jpg"] = next(d for n, d in members.items() if n.endswith(".jpg"))
    return members


def _corrupt(kind):
    def edit(members):
        members = dict(members)
        name = sorted(n for n in members if n.endswith(".jpg"))[1]
        if kind == "truncated":
            members[name] = members[name][: len(members[name]) // 2]
        elif kind == "garbage":
            members[name] = b"\xff\xd8 this is not a jpeg \xff\xd9"
        else:  # wrong size
            ok, data = cv2.imencode(".jpg", np.zeros((256, 300, 3), np.uint8))
            members[name] = data.tobytes()
        return members
    return edit


def _bad_rle_line(members):
    (name, text), = members.items()
    lines = text.decode().splitlines()
    image = lines[2].split("\t")[0]
    lines[2] = f"{image}\t10 5 3 2"
    return {name: ("\n".join(lines) + "\n").encode()}


BAD_CASES = [
    ("train.zip", _drop_first_image, r"train_mask.csv.zip have no image in .*train.zip: synth003_00000.jpg"),
    ("train.zip", _extra_image, r"image\(s\) in .*train.zip have no line in .*: stray_image.jpg"),
    ("train.zip", _corrupt("truncated"), r"train.zip:train/synth003_00001.jpg: truncated JPEG"),
    ("train.zip", _corrupt("garbage"), r"train.zip:train/synth003_00001.jpg: not a decodable image"),
    ("train.zip", _corrupt("size"), r"train.zip:train/synth003_00001.jpg: image is 300x256 \(WxH\), expected 512x512"),
    ("train_mask.csv.zip", _bad_rle_line, r"train_mask.csv.zip:3: synth003_00002.jpg: RLE run 2 .* not sorted"),
]


@pytest.mark.parametrize("member, edit, message", BAD_CASES, ids=[
    "name-without-image", "image-without-name", "truncated-jpeg", "garbage-jpeg", "not-512", "bad-rle"])
def test_bad_data_stops_the_build_with_one_error(synth_contest, tmp_path, member, edit, message):
    download = zipped_copy(synth_contest, tmp_path / "download")
    rewrite_zip(download / member, edit)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataError, match=message):
        build_dataset(download, data_dir, config="val20")
    # nothing that a later run would take for a dataset
    assert not list(data_dir.rglob("dataset_info.json"))
    assert not list(data_dir.rglob("*.array_record*"))
    with pytest.raises(DatasetNotFoundError):
        open_split("tianchi_buildings/val20", "train", data_dir=data_dir)


def test_a_complete_dataset_is_kept_unless_overwrite_is_asked(synth_contest, tmp_path):
    from buildings.data.tfds import build

    first = build("tianchi_buildings", synth_contest, tmp_path, config="val20")
    info = (first.path / "dataset_info.json").read_bytes()
    again = build("tianchi_buildings", synth_contest, tmp_path, config="val20")
    assert (first.kept, again.kept) == (False, True) and again.path == first.path
    assert (again.path / "dataset_info.json").read_bytes() == info
    assert build("tianchi_buildings", synth_contest, tmp_path, config="val20", overwrite=True).kept is False
    with pytest.raises(ConfigError, match="unknown dataset 'parcels'"):
        build("parcels", synth_contest, tmp_path)


def test_sample_submit_name_without_test_image(synth_contest, tmp_path):
    download = zipped_copy(synth_contest, tmp_path / "download")
    with open(download / "test_a_samplesubmit.csv", "a") as handle:
        handle.write("ghost.jpg\t1 1\n")
    with pytest.raises(DataError, match=r"test_a_samplesubmit.csv have no image in .*test_a.zip: ghost.jpg"):
        open_contest(download)


def test_cli_build_reports_bad_data_cleanly(synth_contest, tmp_path):
    from click.testing import CliRunner

    from buildings.cli import main

    download = zipped_copy(synth_contest, tmp_path / "download")
    rewrite_zip(download / "train.zip", _corrupt("garbage"))
    result = CliRunner().invoke(main, ["data", "build", "--manual-dir", str(download),
                                       "--data-dir", str(tmp_path / "tfds")])
    assert result.exit_code == 1
    assert "Error: " in result.output and "not a decodable image" in result.output
    assert "Traceback" not in result.output


# ---- two ways to build: `tfds build` (tf extra) and `buildings data build` -------------------

def tfds_cli_build(manual_dir: Path, data_dir: Path, config: str) -> Path:
    pytest.importorskip("tensorflow", reason="the `tfds build` CLI needs the `tf` extra")
    pytest.importorskip("apache_beam", reason="the `tfds build` CLI needs the `tf` extra")
    tfds_exe = Path(sys.executable).with_name("tfds")
    subprocess.run([str(tfds_exe), "build", str(ROOT / "tfds_builder" / "tianchi_buildings"),
                    "--manual_dir", str(manual_dir), "--data_dir", str(data_dir), "--config", config],
                   check=True, capture_output=True, cwd=ROOT)
    return data_dir / "tianchi_buildings" / config / "1.0.0"


def assert_same_dataset(dir_a: Path, dir_b: Path, truth: dict | None = None) -> int:
    """Same splits, same examples in the same order; masks equal to the RLE truth. Returns count."""
    count = 0
    for split in ("train", "validation", "test"):
        a, b = open_split(dir_a, split), open_split(dir_b, split)
        assert len(a) == len(b), split
        for i in range(len(a)):
            ra, rb = a[i], b[i]
            assert ra["name"] == rb["name"] and ra["image"] == rb["image"]
            assert ra["mask"] == rb["mask"] and bool(ra["has_mask"]) == bool(rb["has_mask"])
            if truth is not None and bool(ra["has_mask"]):
                _, mask = decode_record(ra)
                np.testing.assert_array_equal(mask, decode_rle(truth[ra["name"].decode()]))
            count += 1
    return count


@pytest.mark.slow
def test_tfds_cli_and_buildings_build_agree_on_synthetic(synth_contest, synth_dataset, tmp_path):
    built = tfds_cli_build(synth_contest, tmp_path / "tfds_cli", "val20")
    assert assert_same_dataset(built, synth_dataset) == 12


@pytest.mark.slow
@pytest.mark.real_data
def test_barnarp_built_both_ways_is_identical_and_masks_match_rle(barnarp, tmp_path):
    ours = build_dataset(barnarp, tmp_path / "ours", config="val10")
    theirs = tfds_cli_build(barnarp, tmp_path / "theirs", "val10")
    truth = dict(raw_mask_lines(barnarp / "train_mask.csv.zip"))
    assert assert_same_dataset(ours, theirs, truth) == 170
    assert len(open_split(ours, "validation")) > 0


def test_stats_and_preview_of_the_built_dataset(synth_contest, synth_dataset, tmp_path):
    from buildings.data.stats import dataset_stats, preview_grid

    stats = dataset_stats(synth_dataset)
    download = open_contest(synth_contest)
    assert stats["train"]["images"] + stats["validation"]["images"] == len(download.train_names)
    masks = [decode_rle(r) for r in download.train_masks.values()]
    assert stats["train"]["empty_masks"] + stats["validation"]["empty_masks"] == sum(not m.any() for m in masks)
    assert stats["test"]["with_mask"] == 0 and stats["test"]["images"] == 3
    assert all(0 < v < 1 for v in stats["train"]["mean_rgb"])
    out = preview_grid(synth_dataset, tmp_path / "grid.png", n=5, columns=4)
    grid = cv2.imread(str(out))
    assert grid.shape[1] == 4 * 260 and grid.shape[0] > 2 * 260  # 4 columns, 2 rows of 2.6 in at 100 dpi + title
