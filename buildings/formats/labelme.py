"""labelme annotations (the JSON files the labelme tool saves beside each image) into the folder layout
the multi-class builder reads (``buildings data import-labelme``).

    project/a.jpg  project/a.json  ...   →   out/img_train/a.jpg   out/lab_train/a.png   out/classes.txt

Each JSON's polygons (and rectangles) are filled in file order, later shapes over earlier ones, with
the class index of their label: ``background`` is 0 and the ``--labels`` given are 1..N in order
(``classes.txt`` records the names; ``data build --dataset land_parcels`` reads it). The label
``__ignore__`` (labelme's convention) paints 255, unlabelled for training. The image is the file
``imagePath`` names (relative to the JSON) or, when absent, the JSON's embedded ``imageData``; its
bytes are copied unchanged. Refused, naming the file and the shape: unknown labels, points outside
the image, shapes of other kinds (circle, line, point), a JSON whose image size disagrees with the
image. Nothing is written unless every file is good (written to a temporary folder, then renamed).

With ``dataset="tianchi_buildings"`` (one label, 512x512 images) the output is the contest's own layout instead,
which ``buildings data build`` (the ``tianchi_buildings`` builder) reads like the download:

    project/a.jpg  project/a.json  ...   →   out/train/a.jpg   out/train_mask.csv   (name<TAB>RLE)

``__ignore__`` regions are refused there: the contest's masks are 0/1, with no "unlabelled" value.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from pathlib import Path

import cv2
import numpy as np

from buildings.errors import ConfigError, DataError, OutputError, excerpt
from buildings.files import atomic_dir, write_bytes
from buildings.formats.images import IMAGE_SUFFIXES, decode_image
from buildings.formats.label_maps import encode_label_png
from buildings.formats.rle import CONTEST_SHAPE, encode_rle
from buildings.formats.submission import write_submission

__all__ = ["IGNORE_LABEL", "LAYOUTS", "import_labelme", "rasterize_labelme"]

IGNORE_LABEL = "__ignore__"
BACKGROUND = "background"
LAYOUTS = ("land_parcels", "tianchi_buildings")  # the dataset each output layout builds into
TOLERANCE = 0.5  # labelme stores pixel corners: a point may sit on the far edge (x = width)


def _load_json(path: Path) -> dict:
    """The annotation, checked against the part of labelme's schema used here: types of every
    field read, finite numbers; one DataError naming the file (and the shape) otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a labelme JSON file ({str(err)[:120]})") from None
    except RecursionError:
        raise DataError(f"{path}: not a labelme JSON file (nested too deeply)") from None
    if not isinstance(value, dict) or not isinstance(value.get("shapes"), list):
        raise DataError(f"{path}: not a labelme JSON file (no \"shapes\" list)")
    for key, kinds in (("imagePath", (str, type(None))), ("imageData", (str, type(None))),
                       ("imageHeight", (int, type(None))), ("imageWidth", (int, type(None)))):
        field = value.get(key)
        if not isinstance(field, kinds) or isinstance(field, bool):
            raise DataError(f"{path}: {key} must be {'text' if str in kinds else 'a whole number'}, got "
                            f"{excerpt(field)}")
    for number, shape in enumerate(value["shapes"], 1):
        where = f"{path}: shape {number}"
        if not isinstance(shape, dict):
            raise DataError(f"{where}: not an object with a label and points, got {excerpt(shape)}")
        if not isinstance(shape.get("label"), str):
            raise DataError(f"{where}: its label must be text, got {excerpt(shape.get('label'))}")
        if not isinstance(shape.get("shape_type", "polygon"), (str, type(None))):
            raise DataError(f"{where}: its shape_type must be text, got {excerpt(shape.get('shape_type'))}")
        points = shape.get("points")
        if not (isinstance(points, list) and all(isinstance(p, list) and len(p) == 2 for p in points)
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
                        for p in points for c in p)):
            raise DataError(f"{where} ({shape['label']}): points must be a list of [x, y] pairs of finite numbers, "
                            f"got {excerpt(points)}")
    return value


def _image_bytes(path: Path, value: dict, root: Path | None) -> tuple[bytes, str]:
    """(image file bytes, file name) of the annotation ``value`` read from ``path``. An image file
    is read only inside ``root`` (the project folder; None: anywhere)."""
    image_path = value.get("imagePath")
    name = Path(str(image_path).replace("\\", "/")).name if image_path else path.stem + ".png"
    if not name.lower().endswith(IMAGE_SUFFIXES):
        raise DataError(f"{path}: imagePath {excerpt(image_path)} does not name an image file "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    if image_path:
        candidate = (path.parent / str(image_path).replace("\\", "/")).resolve()
        if root is not None and candidate != root.resolve() and root.resolve() not in candidate.parents:
            raise DataError(f"{path}: imagePath {excerpt(image_path)} is outside the project folder {root} "
                            "(copy the image into it, embed imageData, or pass --allow-outside)")
        if candidate.is_file():
            return candidate.read_bytes(), candidate.name
    if value.get("imageData"):
        try:
            data = base64.b64decode(value["imageData"], validate=True)
        except (binascii.Error, ValueError):
            raise DataError(f"{path}: imageData is not base64") from None
        return data, name
    raise DataError(f"{path}: its image {image_path!r} is missing and the JSON embeds no imageData")


def rasterize_labelme(path, labels: list[str], root=None) -> tuple[bytes, str, np.ndarray]:
    """(image bytes, image file name, uint8 label map) of one labelme JSON; classes as in the module
    doc. ``root``: the project folder its image file must be in (None: anywhere)."""
    path = Path(path)
    value = _load_json(path)
    data, name = _image_bytes(path, value, None if root is None else Path(root))
    image = decode_image(data, f"{path} (its image {name})")
    height, width = image.shape[:2]
    declared = (value.get("imageHeight"), value.get("imageWidth"))
    if any(v is not None for v in declared) and declared != (height, width):
        raise DataError(f"{path}: imageHeight/imageWidth {declared[0]}x{declared[1]} but the image {name} is "
                        f"{height}x{width}")
    classes = {label: index + 1 for index, label in enumerate(labels)} | {BACKGROUND: 0, IGNORE_LABEL: 255}
    out = np.zeros((height, width), np.uint8)
    for number, shape in enumerate(value["shapes"], 1):
        where = f"{path}: shape {number}"
        label = shape.get("label")
        if label not in classes:
            known = ", ".join([BACKGROUND, *labels, IGNORE_LABEL])
            raise DataError(f"{where}: unknown label {label!r} (known: {known}; add it to --labels)")
        kind = shape.get("shape_type") or "polygon"
        try:
            points = np.asarray(shape.get("points"), np.float64).reshape(-1, 2)
        except (TypeError, ValueError):
            raise DataError(f"{where} ({label}): points are not a list of [x, y] pairs") from None
        if kind == "rectangle" and len(points) == 2:
            (x0, y0), (x1, y1) = points
            points = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
        elif kind != "polygon":
            raise DataError(f"{where} ({label}): shape type {kind!r} is not supported (polygon or rectangle)")
        if len(points) < 3:
            raise DataError(f"{where} ({label}): a polygon needs at least 3 points, got {len(points)}")
        outside = (points[:, 0] < -TOLERANCE) | (points[:, 0] > width + TOLERANCE) | \
                  (points[:, 1] < -TOLERANCE) | (points[:, 1] > height + TOLERANCE)
        if outside.any():
            x, y = points[np.argmax(outside)]
            raise DataError(f"{where} ({label}): point ({x:g}, {y:g}) is outside the {width}x{height} image")
        cv2.fillPoly(out, [np.round(points).astype(np.int32)], int(classes[label]))
    return data, name, out


def import_labelme(source, out, labels: list[str], *, dataset: str = "land_parcels", overwrite: bool = False,
                   allow_outside: bool = False) -> dict:
    """Convert every ``*.json`` under ``source`` into ``out/img_train``, ``out/lab_train`` and
    ``out/classes.txt`` (``dataset="land_parcels"``, the multi-class folder layout) or ``out/train``
    and ``out/train_mask.csv`` (``dataset="tianchi_buildings"``, the contest's). Returns counts:
    images, pixels per class. The images are read only inside ``source`` unless ``allow_outside``."""
    source, out = Path(source), Path(out)
    labels = [label.strip() for label in labels if label.strip()]
    if not labels:
        raise ConfigError("--labels: give the class names, e.g. --labels building or --labels building,road")
    if dataset not in LAYOUTS:
        raise ConfigError(f"--dataset {dataset!r}: use {' or '.join(LAYOUTS)}")
    tianchi = dataset == "tianchi_buildings"
    if tianchi and len(labels) != 1:
        raise ConfigError(f"--dataset tianchi_buildings holds one class (0/1 building masks), got --labels "
                          f"{','.join(labels)} (use --dataset land_parcels for several)")
    if len(set(labels)) != len(labels) or {BACKGROUND, IGNORE_LABEL} & set(labels):
        raise ConfigError(f"--labels {','.join(labels)}: names must be distinct and not {BACKGROUND!r} or "
                          f"{IGNORE_LABEL!r} (those are implied)")
    if len(labels) + 1 > 254:
        raise ConfigError(f"--labels: at most 253 classes, got {len(labels)}")
    files = sorted(source.rglob("*.json")) if source.is_dir() else []
    if not files:
        raise DataError(f"{source}: no labelme .json files found")
    if out.resolve() == source.resolve() or out.resolve() in source.resolve().parents:
        raise OutputError(f"--out {out} holds the labelme project {source}: writing there would replace it; "
                          "give another folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: exists and is not empty (--overwrite replaces it)")
    counts = {"images": 0, "pixels": [0] * (len(labels) + 1), "ignored_pixels": 0}
    seen: dict[str, Path] = {}
    masks: dict[str, str] = {}  # the tianchi layout's train_mask.csv rows
    with atomic_dir(out) as staging:
        for path in files:
            data, name, label_map = rasterize_labelme(path, labels, None if allow_outside else source)
            stem = Path(name).stem
            if stem in seen:
                raise DataError(f"{path}: image {name} has the same name as the one of {seen[stem]}")
            seen[stem] = path
            values = np.bincount(label_map.ravel(), minlength=256)
            if tianchi:
                if label_map.shape != CONTEST_SHAPE:  # the contest's tile, what tianchi_buildings reads
                    height, width = label_map.shape
                    raise DataError(f"{path}: its image {name} is {width}x{height}; the Tianchi layout holds "
                                    f"{CONTEST_SHAPE[1]}x{CONTEST_SHAPE[0]} tiles (use --dataset land_parcels)")
                if values[255]:
                    raise DataError(f"{path}: has {IGNORE_LABEL} regions, which the Tianchi layout's 0/1 masks "
                                    f"cannot hold (use --dataset land_parcels)")
                write_bytes(staging / "train" / name, data)
                masks[name] = encode_rle(label_map == 1)
            else:
                write_bytes(staging / "img_train" / name, data)
                write_bytes(staging / "lab_train" / f"{stem}.png", encode_label_png(label_map))
            counts["images"] += 1
            counts["pixels"] = [a + int(b) for a, b in zip(counts["pixels"], values[:len(labels) + 1], strict=True)]
            counts["ignored_pixels"] += int(values[255])
        if tianchi:
            write_submission(staging / "train_mask.csv", masks, shape=CONTEST_SHAPE)
        else:
            (staging / "classes.txt").write_text("\n".join([BACKGROUND, *labels]) + "\n", encoding="utf-8")
    counts["classes"] = [BACKGROUND, *labels]
    return counts
