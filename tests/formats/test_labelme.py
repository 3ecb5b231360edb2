"""``buildings data import-labelme``: a generated labelme project (polygons traced from synthetic
scenes, one rectangle class, an ``__ignore__`` region, one image embedded in its JSON) imports into
the multi-class folder layout, builds with its class names and trains; bad annotations are refused
naming the file and the shape, with nothing written."""

import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from buildings.cli import main
from buildings.data.splits import decode_record, open_split
from buildings.data.synth import synth_scene
from buildings.formats.label_maps import decode_label_png
from buildings.formats.rle import decode_rle
from buildings.formats.submission import read_submission

SIZE = 128


def write_project(folder: Path, n: int = 10, size: int = SIZE, others: bool = True) -> dict[str, np.ndarray]:
    """labelme files for ``n`` scenes (``others``: a road rectangle and an ``__ignore__`` triangle
    besides the buildings); returns the label map each should import as."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(3)
    expected = {}
    for i in range(n):
        image, mask = synth_scene(rng, size, p_empty=0.0)
        name = f"scene{i:02d}.jpg"
        jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        shapes = [{"label": "building", "points": c.reshape(-1, 2).tolist(), "shape_type": "polygon"}
                  for c in contours if len(c) >= 3]
        labels = np.zeros((size, size), np.uint8)
        for s in shapes:
            cv2.fillPoly(labels, [np.array(s["points"], np.int32)], 1)
        if others:
            road = [[0, 100 + i], [size, 110 + i]]  # a rectangle, painted over the buildings it crosses
            shapes.append({"label": "road", "points": road, "shape_type": "rectangle"})
            corners = [[0, 100 + i], [size, 100 + i], [size, 110 + i], [0, 110 + i]]
            cv2.fillPoly(labels, [np.array(corners, np.int32)], 2)
            shapes.append({"label": "__ignore__", "points": [[0, 0], [10, 0], [10, 10]], "shape_type": "polygon"})
            cv2.fillPoly(labels, [np.array([[0, 0], [10, 0], [10, 10]], np.int32)], 255)
        document = {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": name, "imageData": None,
                    "imageHeight": size, "imageWidth": size}
        if i == 0:  # labelme can embed the image instead
            document["imageData"] = base64.b64encode(jpeg).decode()
            document["imagePath"] = "elsewhere/" + name
        else:
            (folder / name).write_bytes(jpeg)
        (folder / f"scene{i:02d}.json").write_text(json.dumps(document))
        expected[Path(name).stem] = labels
    return expected


def test_a_labelme_project_imports_builds_and_trains(tmp_path):
    expected = write_project(tmp_path / "project")
    runner = CliRunner()
    result = runner.invoke(main, ["data", "import-labelme", str(tmp_path / "project"), "--out",
                                  str(tmp_path / "imported"), "--labels", "building,road"])
    assert result.exit_code == 0, result.output
    assert "wrote 10 images" in result.output
    assert (tmp_path / "imported" / "classes.txt").read_text().split() == ["background", "building", "road"]
    for stem, labels in expected.items():
        png = tmp_path / "imported" / "lab_train" / f"{stem}.png"
        assert np.array_equal(decode_label_png(png.read_bytes(), str(png)), labels), stem
        assert (tmp_path / "imported" / "img_train" / f"{stem}.jpg").is_file()

    result = runner.invoke(main, ["data", "build", "--dataset", "land_parcels", "--manual-dir",
                                  str(tmp_path / "imported"), "--data-dir", str(tmp_path / "tfds"),
                                  "--validation-percent", "20"])
    assert result.exit_code == 0, result.output
    dataset = next((tmp_path / "tfds").glob("land_parcels/*/*"))
    train = open_split(dataset, "train")
    assert train.num_classes == 3 and train.class_names == ("background", "building", "road")

    run = tmp_path / "run"
    result = runner.invoke(main, ["fit", "--data", str(dataset), "--model", "unet", "--model-option", "filters=4",
                                  "--model-option", "depth=3", "--epochs", "2", "--batch-size", "4", "--image-size",
                                  "64", "--aug", "none", "--run-dir", str(run)])
    assert result.exit_code == 0, result.output
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 2 and {"val_iou_building", "val_iou_road"} <= set(history.columns)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda d: d["shapes"].append({"label": "tree", "points": [[1, 1], [5, 1], [5, 5]]}),
     "scene01.json: shape {n}: unknown label 'tree'"),
    (lambda d: d["shapes"].append({"label": "building", "points": [[1, 1], [500, 1], [5, 5]]}),
     "scene01.json: shape {n} (building): point (500, 1) is outside the 128x128 image"),
    (lambda d: d["shapes"].append({"label": "building", "points": [[1, 1], [5, 5]], "shape_type": "circle"}),
     "scene01.json: shape {n} (building): shape type 'circle' is not supported"),
    (lambda d: d.update(imageHeight=256), "scene01.json: imageHeight/imageWidth 256x128"),
])
def test_bad_annotations_are_refused_naming_file_and_shape(tmp_path, edit, message):
    write_project(tmp_path / "project", n=3)
    path = tmp_path / "project" / "scene01.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(main, ["data", "import-labelme", str(tmp_path / "project"), "--out",
                                       str(tmp_path / "imported"), "--labels", "building,road"])
    assert result.exit_code != 0
    assert message.format(n=len(document["shapes"])) in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "imported").exists() and not list(tmp_path.glob(".imported*"))


def test_one_class_imports_into_the_tianchi_layout_and_builds_as_the_contest_dataset(tmp_path):
    expected = write_project(tmp_path / "project", n=4, size=512, others=False)
    runner = CliRunner()
    out = tmp_path / "tianchi"
    result = runner.invoke(main, ["data", "import-labelme", str(tmp_path / "project"), "--out", str(out),
                                  "--labels", "building", "--dataset", "tianchi_buildings"])
    assert result.exit_code == 0, result.output
    assert "wrote 4 images and train_mask.csv" in result.output
    masks = read_submission(out / "train_mask.csv", shape=(512, 512))
    assert sorted(masks) == [f"{stem}.jpg" for stem in sorted(expected)]
    for stem, labels in expected.items():
        assert labels.any() and np.array_equal(decode_rle(masks[f"{stem}.jpg"]), labels), stem
        assert (out / "train" / f"{stem}.jpg").is_file()

    result = runner.invoke(main, ["data", "build", "--manual-dir", str(out), "--data-dir", str(tmp_path / "tfds")])
    assert result.exit_code == 0, result.output
    dataset = next((tmp_path / "tfds").glob("tianchi_buildings/*/*"))
    built = {}
    for split in ("train", "validation"):
        source = open_split(dataset, split)
        for i in range(len(source)):
            record = source[i]
            built[record["name"].decode()] = decode_record(record)[1]
    assert sorted(built) == sorted(masks)
    for name, mask in built.items():
        assert np.array_equal(mask, expected[Path(name).stem]), name


@pytest.mark.parametrize(("labels", "others", "size", "message"), [
    ("building,road", False, 512, "--dataset tianchi_buildings holds one class"),
    ("building", True, 512, "unknown label 'road'"),  # the folder project's road rectangles
    ("building", False, 128, "scene00.json: its image scene00.jpg is 128x128; the Tianchi layout holds 512x512"),
])
def test_the_tianchi_layout_refuses_what_it_cannot_hold(tmp_path, labels, others, size, message):
    write_project(tmp_path / "project", n=2, size=size, others=others)
    result = CliRunner().invoke(main, ["data", "import-labelme", str(tmp_path / "project"), "--out",
                                       str(tmp_path / "imported"), "--labels", labels, "--dataset", "tianchi_buildings"])
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "imported").exists() and not list(tmp_path.glob(".imported*"))


def test_the_tianchi_layout_refuses_ignore_regions_naming_the_file(tmp_path):
    write_project(tmp_path / "project", n=2, size=512, others=False)
    path = tmp_path / "project" / "scene01.json"
    document = json.loads(path.read_text())
    document["shapes"].append({"label": "__ignore__", "points": [[0, 0], [10, 0], [10, 10]]})
    path.write_text(json.dumps(document))
    result = CliRunner().invoke(main, ["data", "import-labelme", str(tmp_path / "project"), "--out",
                                       str(tmp_path / "imported"), "--labels", "building", "--dataset", "tianchi_buildings"])
    assert result.exit_code != 0
    assert "scene01.json: has __ignore__ regions" in result.output, result.output
    assert not (tmp_path / "imported").exists()


# -- labelme JSON read strictly; images read only inside the project (issue 25, item 5) -------------------
def _one_annotation(folder: Path, raw: str | None = None, **fields) -> Path:
    """A one-image project: a.png (32x32) and a.json with one square building, ``fields`` replaced
    (or the JSON text ``raw`` as it is)."""
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / "a.png"), np.zeros((32, 32, 3), np.uint8))
    value = {"imagePath": "a.png", "imageHeight": 32, "imageWidth": 32, "imageData": None,
             "shapes": [{"label": "building", "points": [[2, 2], [10, 2], [10, 10], [2, 10]],
                         "shape_type": "polygon"}]}
    value.update(fields)
    (folder / "a.json").write_text(json.dumps(value) if raw is None else raw)
    return folder


@pytest.mark.parametrize("fields, message", [
    ({"imageData": 12345}, "a.json: imageData must be text, got 12345"),
    ({"shapes": [42]}, "a.json: shape 1: not an object with a label and points, got 42"),
    ({"shapes": [{"label": ["building"], "points": [[1, 1], [2, 2], [1, 2]]}]}, "shape 1: its label must be text"),
    ({"shapes": [{"label": "building", "points": [[1, float("nan")], [2, 2], [1, 2]]}]},
     "points must be a list of [x, y] pairs of finite numbers"),
    ({"shapes": [{"label": "building", "points": [[1, 1], [2, "x"], [1, 2]]}]}, "pairs of finite numbers"),
    ({"imageHeight": "512x"}, "a.json: imageHeight must be a whole number, got '512x'"),
    ({"imageHeight": 31}, "imageHeight/imageWidth 31x32 but the image a.png is 32x32"),
    ({"imagePath": "/etc/passwd"}, "imagePath '/etc/passwd' does not name an image file"),
    ({"imagePath": "/"}, "imagePath '/' does not name an image file"),
    ({"imagePath": "../outside.png"}, "imagePath '../outside.png' is outside the project folder"),
    ({"raw": "[" * 200000 + "]" * 200000}, "a.json: not a labelme JSON file (nested too deeply)"),
])
def test_a_bad_annotation_is_refused_in_one_line_and_nothing_is_written(tmp_path, fields, message):
    project = _one_annotation(tmp_path / "project", **fields)
    cv2.imwrite(str(tmp_path / "outside.png"), np.zeros((32, 32, 3), np.uint8))
    result = CliRunner().invoke(main, ["data", "import-labelme", str(project), "--out", str(tmp_path / "out"),
                                       "--labels", "building"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output[-2000:]
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0] and len(errors[0]) < 420, result.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_an_image_outside_the_project_is_read_when_allowed(tmp_path):
    project = _one_annotation(tmp_path / "project", imagePath="../outside.png")
    cv2.imwrite(str(tmp_path / "outside.png"), np.zeros((32, 32, 3), np.uint8))
    result = CliRunner().invoke(main, ["data", "import-labelme", str(project), "--out", str(tmp_path / "out"),
                                       "--labels", "building", "--allow-outside"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "img_train" / "outside.png").is_file()
