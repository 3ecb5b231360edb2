"""buildings.formats.images: one decoder and one reader of image folders, zips and files."""

import io
import zipfile

import cv2
import numpy as np
import pytest

from buildings.errors import DataError, ImageReadError
from buildings.formats.images import ImageArchive, decode_image, iter_images


def jpeg(seed: int, size=(24, 32)) -> bytes:
    image = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


@pytest.fixture
def layouts(tmp_path):
    """The same three images as a folder (with a sub-folder) and as a zip."""
    files = {"b.jpg": jpeg(1), "a.jpg": jpeg(0), "sub/c.png": cv2.imencode(".png", np.zeros((5, 7), np.uint8))[1].tobytes()}
    folder = tmp_path / "folder"
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("not an image")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"top/{name}", data)
        archive.writestr("__MACOSX/top/._a.jpg", b"resource fork")
    (tmp_path / "images.zip").write_bytes(buffer.getvalue())
    return folder, tmp_path / "images.zip", files


def test_folder_and_zip_read_the_same_sorted_by_name(layouts):
    folder, zipped, files = layouts
    for location in (folder, zipped):
        with ImageArchive(location) as archive:
            assert archive.names == ["a.jpg", "b.jpg", "c.png"]
            assert archive.read("b.jpg") == files["b.jpg"]
            assert archive.load("c.png").shape == (5, 7, 3)  # grayscale becomes RGB
            assert archive.describe("a.jpg").endswith("a.jpg")
    assert ImageArchive(zipped).describe("a.jpg") == f"{zipped}:top/a.jpg"
    single = ImageArchive(folder / "a.jpg")
    assert single.names == ["a.jpg"] and single.read("a.jpg") == files["a.jpg"]
    assert [name for name, _ in iter_images(folder)] == ["a.jpg", "b.jpg", "c.png"]


def test_within_keeps_one_sub_folder(layouts):
    folder, zipped, _ = layouts
    assert ImageArchive(folder, within="sub").names == ["c.png"]
    assert ImageArchive(zipped, within="top").names == ["a.jpg", "b.jpg"]


def test_the_same_name_twice_is_refused_naming_both(layouts, tmp_path):
    folder, _, files = layouts
    (folder / "other").mkdir()
    (folder / "other" / "a.jpg").write_bytes(files["a.jpg"])
    with pytest.raises(DataError, match=r"two images named 'a.jpg': .*/a.jpg and .*other/a.jpg"):
        ImageArchive(folder)


def test_missing_empty_and_broken_sources(tmp_path):
    with pytest.raises(ImageReadError, match="no such image, folder or zip"):
        ImageArchive(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageReadError, match="no images"):
        list(iter_images(tmp_path / "empty"))
    (tmp_path / "fake.zip").write_bytes(b"PK not really")
    with pytest.raises(DataError, match="fake.zip: not a readable zip file"):
        ImageArchive(tmp_path / "fake.zip")


def test_decode_checks():
    data = jpeg(2)
    assert decode_image(data, "x.jpg").shape == (24, 32, 3)
    with pytest.raises(ImageReadError, match="x.jpg: truncated JPEG"):
        decode_image(data[:-40], "x.jpg", strict=True)
    with pytest.raises(ImageReadError, match=r"x.jpg: image is 32x24 \(WxH\), expected 16x16"):
        decode_image(data, "x.jpg", shape=(16, 16))
    with pytest.raises(ImageReadError, match="x.jpg: not a decodable image"):
        decode_image(b"junk", "x.jpg")
