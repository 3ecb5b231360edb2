"""Hostile inputs, one corpus per class, generated here: every one must end in a single bounded
``Error:`` line naming what is at fault, leave no output or temporary behind, and never be read as
something it is not. (Faults of the machine — full disk, kill -9 — are in test_faults.py.)"""

import shutil
import struct
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest
from click.testing import CliRunner
from helpers import damage_jpeg, rezip, score_back

from buildings.cli import main
from buildings.errors import MESSAGE_LIMIT, SubmissionError
from buildings.files import TEMP_MARK
from buildings.formats.rle import decode_rle, encode_rle
from buildings.formats.submission import read_submission, write_submission
from buildings.models import build_model


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(result) -> str:
    """The single ``Error:`` line of a failed command (no traceback, bounded length)."""
    assert result.exit_code == 1, (result.exit_code, result.output[-2000:], result.exception)
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output[-2000:]
    assert len(lines[0]) <= len("Error: ") + MESSAGE_LIMIT
    return lines[0]


def leftovers(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if TEMP_MARK in p.name or p.name.endswith(".tmp")]


def noisy_mask(shape=(512, 512)) -> np.ndarray:
    """About the longest RLE a mask can have: a checkerboard (130,816 runs in 512x512)."""
    return (np.indices(shape).sum(0) % 2).astype(np.uint8)


@pytest.fixture(scope="module")
def noisy_checkpoint(tmp_path_factory) -> Path:
    """A model whose prediction is salt-and-pepper noise: a 1x1 convolution of the image with large
    weights, so the threshold splits pixels by their random colour."""
    inputs = keras.Input((None, None, 3), name="image")
    conv = keras.layers.Conv2D(1, 1, kernel_initializer=keras.initializers.Constant(50.0), name="head_conv")
    model = keras.Model(inputs, conv(inputs))
    path = tmp_path_factory.mktemp("noisy") / "noisy.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def tiny_checkpoints(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("tiny")
    paths = {}
    for classes in (1, 4):
        keras.utils.set_random_seed(0)
        paths[classes] = folder / f"classes{classes}.keras"
        build_model("unet", filters=4, depth=2, num_classes=classes).save(paths[classes])
    return paths


# -- 1. long lines -------------------------------------------------------------------------------

def test_an_rle_line_of_any_length_reads(tmp_path):
    mask = noisy_mask()
    text = encode_rle(mask)
    assert len(text) > 1_000_000 and len(text.split()) > 260_000  # far past csv's 131,072-character limit
    write_submission(tmp_path / "sub.csv", {"a.jpg": text, "b.jpg": ""})
    rows = read_submission(tmp_path / "sub.csv", shape=(512, 512))
    np.testing.assert_array_equal(decode_rle(rows["a.jpg"], (512, 512)), mask)
    result = invoke("score", tmp_path / "sub.csv", tmp_path / "sub.csv", "--json")
    assert result.exit_code == 0 and '"dice": 1.0' in result.output, result.output[-500:]


def test_the_contest_reader_reads_a_noisy_train_mask(synth_contest, tmp_path):
    """train_mask.csv(.zip) with a checkerboard mask line builds, and the mask comes back exactly."""
    from buildings.data.contest import open_contest

    download = tmp_path / "download"
    shutil.copytree(synth_contest, download)
    with zipfile.ZipFile(download / "train_mask.csv.zip") as archive:
        lines = archive.read("train_mask.csv").decode().splitlines()
    name = lines[0].split("\t")[0]
    lines[0] = f"{name}\t{encode_rle(noisy_mask())}"
    with zipfile.ZipFile(download / "train_mask.csv.zip", "w") as archive:
        archive.writestr("train_mask.csv", "\n".join(lines) + "\n")
    example = next(e for e in open_contest(download).examples("train") if e.name == name)
    np.testing.assert_array_equal(example.mask, noisy_mask())


def test_score_reads_back_a_noisy_submission_predict_wrote(noisy_checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        cv2.imwrite(str(images / f"n{i}.png"), rng.integers(0, 256, (512, 512, 3), dtype=np.uint8))
    result = invoke("predict", "--checkpoint", noisy_checkpoint, "--images", images, "--out", tmp_path / "sub.csv",
                    "--tile", 512)
    assert result.exit_code == 0, result.output
    longest = max(len(line) for line in (tmp_path / "sub.csv").read_text().splitlines())
    assert longest > 131_072  # the submission the reader once could not read
    assert score_back(tmp_path / "sub.csv")["n_images"] == 2


# -- 2. corrupt containers -----------------------------------------------------------------------

def corrupt_zips(valid: Path, folder: Path) -> dict:
    """{case: (path, message pattern, whether the problem is in one member)} for one valid zip."""
    data = valid.read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(valid) as archive:
        first = archive.infolist()[0]
        member = first.filename
    cases = {}

    def put(case, blob, pattern, in_member):
        path = folder / f"{case}-{valid.name}"
        path.write_bytes(blob)
        cases[case] = (path, pattern, in_member)

    put("not-a-zip", b"this is not a zip archive\n" * 10, "not a readable zip file", False)
    put("truncated", data[: len(data) // 2], "not a readable zip file", False)
    directory = data.rindex(b"PK\x01\x02")  # the last central-directory entry
    put("central-directory", data[:directory] + b"XX\x01\x02" + data[directory + 4:], "not a readable zip file", False)
    first_entry = data.index(b"PK\x01\x02")
    offset_field = first_entry + 42  # relative offset of the first member's local header
    wrong = struct.pack("<I", struct.unpack("<I", data[offset_field:offset_field + 4])[0] + 7)
    put("member-offset", data[:offset_field] + wrong + data[offset_field + 4:], "corrupt zip member", True)
    start = data.index(b"PK\x03\x04") + 30 + len(member.encode()) + len(first.extra)
    flipped = bytes([data[start + 40] ^ 0xFF])
    put("member-crc", data[:start + 40] + flipped + data[start + 41:], "corrupt zip member", True)
    return cases


@pytest.fixture(scope="module")
def submission_zip(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("subzip")
    text = "".join(f"t{i}.jpg\t{encode_rle(noisy_mask((64, 64)) if i else np.zeros((64, 64), np.uint8))}\n"
                   for i in range(3))
    with zipfile.ZipFile(folder / "sub.zip", "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("sub.csv", text)
    (folder / "sub.csv").write_text(text)
    return folder


@pytest.mark.parametrize("case", ["not-a-zip", "truncated", "central-directory", "member-offset", "member-crc"])
def test_score_names_a_broken_submission_zip(case, submission_zip, tmp_path):
    path, pattern, in_member = corrupt_zips(submission_zip / "sub.zip", tmp_path)[case]
    line = one_error_line(invoke("score", path, submission_zip / "sub.csv", "--shape", "64x64"))
    assert str(path) in line and pattern in line, line
    assert ("sub.zip:sub.csv" in line) == in_member, line


IMAGE_CASES = ["not-a-zip", "truncated", "central-directory", "member-offset", "member-crc", "empty-image",
               "damaged-jpeg"]


def broken_test_zip(valid: Path, folder: Path, case: str):
    """(path, message pattern, member) of a broken copy of a test_a.zip-like archive."""
    folder.mkdir(parents=True, exist_ok=True)
    if case in ("empty-image", "damaged-jpeg"):
        with zipfile.ZipFile(valid) as archive:
            member = sorted(n for n in archive.namelist() if n.endswith(".jpg"))[1]
        path = rezip(valid, folder / valid.name,
                     lambda n, d: (b"" if case == "empty-image" else damage_jpeg(d)) if n == member else d)
        return path, "empty file (0 bytes)" if case == "empty-image" else "corrupt JPEG", member
    path, pattern, in_member = corrupt_zips(valid, folder / "parts")[case]
    target = folder / valid.name
    shutil.move(path, target)
    with zipfile.ZipFile(valid) as archive:
        member = archive.infolist()[0].filename if in_member else None
    return target, pattern, member


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_data_build_names_the_broken_archive_and_member(case, synth_contest, tmp_path):
    download = tmp_path / "download"
    shutil.copytree(synth_contest, download)
    for name in ("train.zip", "test_a.zip"):
        path, pattern, member = broken_test_zip(synth_contest / name, tmp_path / f"broken-{name}", case)
        shutil.copy(path, download / name)
        line = one_error_line(invoke("data", "build", "--manual-dir", download, "--data-dir", tmp_path / "tfds"))
        assert f"{download / name}" in line and pattern in line, line
        if member:
            assert member in line, line
        assert not (tmp_path / "tfds").exists() or not list((tmp_path / "tfds").rglob("dataset_info.json"))
        assert leftovers(tmp_path) == []
        shutil.copy(synth_contest / name, download / name)


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_predict_images_names_the_broken_archive_and_member(case, synth_contest, tiny_checkpoints, tmp_path):
    path, pattern, member = broken_test_zip(synth_contest / "test_a.zip", tmp_path / "broken", case)
    out = tmp_path / "out"
    line = one_error_line(invoke("predict", "--checkpoint", tiny_checkpoints[1], "--images", path,
                                 "--out", out / "sub.csv", "--save-masks", out / "masks"))
    assert str(path) in line and pattern in line, line
    if member:
        assert member in line, line
    assert not out.exists() or list(out.iterdir()) == []


# -- 5. collisions ---------------------------------------------------------------------------------

def test_outputs_that_would_share_a_name_are_refused(tiny_checkpoints, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    picture = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(images / "a.jpg"), picture)
    cv2.imwrite(str(images / "a.png"), picture)
    out = tmp_path / "out"
    for flags in (["--save-masks", out / "masks"], ["--out", out / "result.zip", "--format", "png-zip"]):
        line = one_error_line(invoke("predict", "--checkpoint", tiny_checkpoints[1], "--images", images, *flags))
        assert "'a.jpg' and 'a.png' would both be written as 'a.png'" in line, line
        assert not out.exists() or list(out.iterdir()) == []
    result = invoke("predict", "--checkpoint", tiny_checkpoints[1], "--images", images, "--out", out / "sub.csv")
    assert result.exit_code == 0, result.output  # the RLE file keeps full names: no clash
    assert score_back(out / "sub.csv", (64, 64))["n_images"] == 2


def test_the_same_file_name_twice_in_an_archive_is_refused_naming_both(tiny_checkpoints, tmp_path):
    ok, jpeg = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as archive:
        archive.writestr("day1/x.jpg", jpeg.tobytes())
        archive.writestr("day2/x.jpg", jpeg.tobytes())
    line = one_error_line(invoke("predict", "--checkpoint", tiny_checkpoints[1], "--images", tmp_path / "images.zip",
                                 "--out", tmp_path / "sub.csv"))
    assert "two images named 'x.jpg': day1/x.jpg and day2/x.jpg" in line, line


# -- 6. wrong model for the data -------------------------------------------------------------------

def test_a_model_of_another_task_is_refused(synth_dataset, tiny_checkpoints, tmp_path):
    out = tmp_path / "out"
    for command in ("predict", "evaluate"):
        extra = ["--out", out / "result.zip"] if command == "predict" else []
        line = one_error_line(invoke(command, "--checkpoint", tiny_checkpoints[4], "--data", synth_dataset, *extra))
        assert "the model is 4 classes but the dataset" in line and "is binary" in line, line
    assert not out.exists()


def test_a_binary_model_on_a_four_class_dataset_is_refused(tiny_checkpoints, tmp_path):
    from buildings.data.synth import write_synthetic_parcels
    from buildings.data.tfds.land_parcels import build_land_parcels

    write_synthetic_parcels(tmp_path / "parcels", n=6, num_classes=4, seed=1)
    data = build_land_parcels(tmp_path / "parcels", tmp_path / "tfds", num_classes=4, validation_percent=20)
    for command in ("predict", "evaluate"):
        extra = ["--out", tmp_path / "out" / "sub.csv"] if command == "predict" else []
        line = one_error_line(invoke(command, "--checkpoint", tiny_checkpoints[1], "--data", data, *extra))
        assert "the model is binary ({0, 1} masks) but the dataset" in line and "is 4 classes" in line, line
    assert not (tmp_path / "out").exists()


# -- 7. bounds ---------------------------------------------------------------------------------------

def test_sizes_are_checked_before_any_memory_is_taken(submission_zip):
    result = invoke("score", submission_zip / "sub.csv", submission_zip / "sub.csv", "--shape", "100000x100000")
    assert result.exit_code == 2 and "more than the 268,435,456 pixels" in result.output


@pytest.mark.parametrize("content, expected", [
    (b"\x00" * 100_000, "binary data (a NUL byte at offset 0)"),
    (b"a.jpg\t1 2\nb.jpg\t1 2\n\"c.jpg\t1 2\n" + b"d.jpg\t1 1\n" * 5000,
     ":3: a quote (\") opens a field that does not close on this line"),
    (b"a.jpg\t" + b"9" * 50_000 + b" 1\n", "the run ends past the image end"),
    (b"a.jpg\t1 2 " + b"x" * 50_000 + b"\n", "RLE token 3 ('xxxxxx"),
    ("caf\u00e9.jpg\t1 2\n".encode("latin-1"), "not UTF-8 text (byte 3: b'\\xe9.jp')"),
    (b"a.jpg\t1 2\tx\ty\tz" * 3000 + b"\n", "expected 'name<TAB>rle', found"),
], ids=["nul-bytes", "unclosed-quote", "huge-number", "long-garbage-token", "latin-1", "many-fields"])
def test_messages_about_bad_files_are_one_short_line(content, expected, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    truth = tmp_path / "truth.csv"
    truth.write_text("a.jpg\t1 2\n")
    line = one_error_line(invoke("score", bad, truth))
    assert expected in line and str(bad) in line, line
    with pytest.raises(SubmissionError):
        read_submission(bad, shape=(512, 512))


@pytest.mark.parametrize("n", [3, 16])
def test_small_synthetic_downloads_build(n, tmp_path):
    """``data synth --n 16`` then ``data build`` (val5: the hash hold-out alone would be empty)."""
    assert invoke("data", "synth", "--out", tmp_path / "dl", "--n", n).exit_code == 0
    result = invoke("data", "build", "--manual-dir", tmp_path / "dl", "--data-dir", tmp_path / "tfds")
    assert result.exit_code == 0, result.output
    from buildings.data.splits import open_split

    data = tmp_path / "tfds" / "tianchi_buildings"
    sizes = {split: len(open_split(data, split)) for split in ("train", "validation", "test")}
    assert sizes["train"] >= 1 and sizes["validation"] >= 1 and sum(sizes.values()) == n


def test_a_download_too_small_to_split_says_what_is_missing(tmp_path):
    assert invoke("data", "synth", "--out", tmp_path / "dl", "--n", 2).exit_code == 0  # 1 train, 1 test
    line = one_error_line(invoke("data", "build", "--manual-dir", tmp_path / "dl", "--data-dir", tmp_path / "tfds"))
    assert "1 training image(s): a dataset needs at least 2" in line, line
    assert not (tmp_path / "tfds").exists() or not list((tmp_path / "tfds").rglob("dataset_info.json"))


def test_error_lines_are_cut_to_the_limit():
    from buildings.errors import one_line

    assert one_line("a\nb\n\nc") == "a | b | c"
    cut = one_line("x" * 5000)
    assert len(cut) == MESSAGE_LIMIT and cut.endswith("...")


# -- 8. one error type ------------------------------------------------------------------------------

def test_every_user_error_is_a_buildings_error():
    import buildings.errors as errors

    for name in errors.__all__:
        kind = getattr(errors, name)
        if isinstance(kind, type) and name != "BuildingsError":
            assert issubclass(kind, errors.BuildingsError), name


# -- outputs that would destroy inputs: refused before any work, naming both, the input untouched -------
def _pngs(folder: Path, n: int = 2) -> dict[Path, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for i in range(n):
        cv2.imwrite(str(folder / f"tile{i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    return {p: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("flags, message", [
    (["--save-masks", "{images}"], "--save-masks {images}/tile0.png would overwrite the input {images}/tile0.png"),
    (["--out", "{images}/tile1.png"], "--out {images}/tile1.png would overwrite the input {images}/tile1.png"),
    (["--save-masks", "{other}", "--save-overlays", "{other}"],
     "--save-masks and --save-overlays would both write {other}/tile0.png"),
])
def test_predict_refuses_outputs_that_replace_inputs_or_each_other(tiny_checkpoints, tmp_path, flags, message):
    images, other = tmp_path / "pngs", tmp_path / "other"
    before = _pngs(images)
    flags = [f.format(images=images, other=other) for f in flags]
    line = one_error_line(invoke("predict", "--checkpoint", tiny_checkpoints[1], "--images", images, *flags))
    assert message.format(images=images, other=other) in line, line
    assert {p: p.read_bytes() for p in sorted(images.iterdir())} == before  # nothing replaced, nothing added
    assert not other.exists() and leftovers(tmp_path) == []


def test_a_submission_that_cannot_be_written_is_refused_before_predicting(tiny_checkpoints, tmp_path):
    images = tmp_path / "pngs"
    _pngs(images)
    (tmp_path / "a-file").write_text("not a folder")
    result = invoke("predict", "--checkpoint", tiny_checkpoints[1], "--images", images, "--out",
                    tmp_path / "a-file" / "sub.csv")
    assert "a-file" in one_error_line(result) and "predicting" not in result.output


def test_a_geotiff_mask_never_replaces_the_geotiff(tmp_path):
    pytest.importorskip("rasterio", reason="the [deploy] extra is not installed")
    from helpers import brightness_model, write_raster

    (tmp_path / "same").mkdir()
    source = write_raster(tmp_path / "same" / "base.tif")
    before = source.read_bytes()
    checkpoint = brightness_model(tmp_path / "brightness.keras")
    line = one_error_line(invoke("predict", "--checkpoint", checkpoint, "--images", source, "--save-masks",
                                 source.parent))
    assert f"--save-masks {source} would overwrite the input {source}" in line, line
    assert source.read_bytes() == before and sorted(p.name for p in source.parent.iterdir()) == ["base.tif"]


def test_tune_never_writes_its_choice_over_the_checkpoint(tiny_checkpoints, synth_dataset, tmp_path):
    checkpoint = tmp_path / "model.keras"
    shutil.copy(tiny_checkpoints[1], checkpoint)
    before = checkpoint.read_bytes()
    line = one_error_line(invoke("tune", "--checkpoint", checkpoint, "--data", synth_dataset, "--out", checkpoint))
    assert f"--out {checkpoint} would overwrite the input {checkpoint}" in line
    assert checkpoint.read_bytes() == before


def test_labelme_import_never_writes_over_its_project(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "a.json").write_text("{}")
    for out in (project, tmp_path):
        line = one_error_line(invoke("data", "import-labelme", project, "--out", out, "--labels", "building",
                                     "--overwrite"))
        assert f"--out {out} holds the labelme project {project}" in line
        assert (project / "a.json").read_text() == "{}"
