"""Prediction: batched, test-time augmentation, ensembles, tiling of any image size, post-processing.

Models output logits; probabilities appear only here (sigmoid for one logit, softmax for N).
Everything is computed in NumPy around ``model.predict_on_batch`` so it runs the same on every
backend and on the GPU when the backend has one.

* TTA: ``none``, ``flip`` (identity + horizontal + vertical flips), ``d4`` (the 8 rotations and
  reflections of the square); probabilities are averaged after undoing each transform.
* Ensembles: mean of probabilities (optional weights), or a per-pixel majority vote of the
  thresholded masks.
* Any size: images are cut into overlapping ``tile``-sized windows (reflect-padded to a multiple
  of 32 when smaller), and window probabilities are blended with a raised-cosine weight, so window
  borders leave no seams.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from buildings.data.pipeline import normalise
from buildings.rle import encode_rle
from buildings.submission import write_submission

__all__ = [
    "CheckpointError",
    "Evaluation",
    "ImageReadError",
    "Predictor",
    "fill_holes",
    "iter_images",
    "evaluate",
    "load_checkpoints",
    "predict_to_submission",
    "remove_small_components",
]

TTA_MODES = ("none", "flip", "d4")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


class CheckpointError(ValueError):
    """A checkpoint that cannot serve as a segmentation model."""


class ImageReadError(ValueError):
    """An input image that is missing or unreadable; the message names it."""


def load_checkpoints(paths: Sequence[str | os.PathLike]):
    """Load ``.keras`` checkpoints; all must give the same number of output channels."""
    from buildings.models import load_model

    models = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: checkpoint not found")
        try:
            model = load_model(path, compile=False)
        except Exception as err:  # Keras raises many kinds for a file that is not a model
            raise CheckpointError(f"{path}: not a loadable .keras model ({type(err).__name__}: {err})") from None
        shape = model.output_shape
        if not (isinstance(shape, tuple) and len(shape) == 4 and len(model.input_shape) == 4
                and model.input_shape[-1] == 3):
            raise CheckpointError(f"{path}: not a segmentation model (input {model.input_shape}, output {shape})")
        models.append(model)
    channels = {m.output_shape[-1] for m in models}
    if len(channels) > 1:
        raise CheckpointError(f"checkpoints disagree on the number of classes: {sorted(channels)}")
    return models


def _d4(k: int, flip: bool):
    def forward(x):  # x: (B, H, W, C)
        x = np.rot90(x, k, axes=(1, 2))
        return x[:, :, ::-1] if flip else x

    def inverse(y):
        y = y[:, :, ::-1] if flip else y
        return np.rot90(y, -k, axes=(1, 2))

    return forward, inverse


def tta_transforms(mode: str):
    if mode == "none":
        return [_d4(0, False)]
    if mode == "flip":
        identity = _d4(0, False)
        hflip = (lambda x: x[:, :, ::-1], lambda y: y[:, :, ::-1])
        vflip = (lambda x: x[:, ::-1], lambda y: y[:, ::-1])
        return [identity, hflip, vflip]
    if mode == "d4":
        return [_d4(k, flip) for k in range(4) for flip in (False, True)]
    raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")


def _window(size: int, overlap: int) -> np.ndarray:
    """1-D blending weights: raised-cosine ramps over ``overlap`` pixels at each end, never 0."""
    weights = np.ones(size, np.float32)
    if overlap > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        weights[:overlap] = ramp
        weights[-overlap:] = ramp[::-1]
    return weights


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride)) + [length - tile]
    return sorted(set(starts))


@dataclass
class Predictor:
    """Probabilities of one or several models for RGB uint8 images of any size.

    Args:
        models: Keras models (logits out), e.g. from :func:`load_checkpoints`.
        tta: ``none``, ``flip`` or ``d4``.
        weights: ensemble weights (default equal).
        vote: per-pixel majority vote of thresholded masks instead of mean probabilities.
        threshold: probability threshold for binary masks (and for the vote).
        tile: window side for images larger than it (a multiple of 32).
        overlap: pixels shared by neighbouring windows.
        batch_size: windows per ``predict_on_batch`` call.
    """

    models: list
    tta: str = "none"
    weights: Sequence[float] | None = None
    vote: bool = False
    threshold: float = 0.5
    tile: int = 512
    overlap: int = 128
    batch_size: int = 8

    def __post_init__(self):
        tta_transforms(self.tta)
        if self.tile % 32:
            raise ValueError(f"tile must be a multiple of 32, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ValueError(f"overlap must be in [0, tile), got {self.overlap}")
        if self.weights is not None and len(self.weights) != len(self.models):
            raise ValueError(f"{len(self.weights)} weights for {len(self.models)} models")
        self.num_classes = self.models[0].output_shape[-1]

    # -- windows -------------------------------------------------------------------------------
    def _model_probs(self, model, batch: np.ndarray) -> np.ndarray:
        """Probabilities (B, H, W, C) of one model with TTA, batch already normalised float32."""
        total = None
        transforms = tta_transforms(self.tta)
        for forward, inverse in transforms:
            logits = np.asarray(model.predict_on_batch(np.ascontiguousarray(forward(batch))), np.float32)
            if self.num_classes == 1:
                probs = 1.0 / (1.0 + np.exp(-logits))
            else:
                shifted = np.exp(logits - logits.max(-1, keepdims=True))
                probs = shifted / shifted.sum(-1, keepdims=True)
            probs = inverse(probs)
            total = probs if total is None else total + probs
        return total / len(transforms)

    def _window_probs(self, windows: np.ndarray) -> np.ndarray:
        """Ensemble probabilities (B, h, w, C) of RGB uint8 windows."""
        batch = normalise(windows)
        weights = np.ones(len(self.models)) if self.weights is None else np.asarray(self.weights, float)
        weights = weights / weights.sum()
        total = 0.0
        for weight, model in zip(weights, self.models, strict=True):
            probs = self._model_probs(model, batch)
            if self.vote:
                probs = (probs > self.threshold).astype(np.float32) if self.num_classes == 1 else \
                    np.eye(self.num_classes, dtype=np.float32)[probs.argmax(-1)]
            total = total + weight * probs
        return np.asarray(total, np.float32)

    # -- whole images --------------------------------------------------------------------------
    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 probabilities for one RGB uint8 image of any size."""
        height, width = image.shape[:2]
        tile_h = min(self.tile, -(-height // 32) * 32)
        tile_w = min(self.tile, -(-width // 32) * 32)
        pad_h, pad_w = max(tile_h - height, 0), max(tile_w - width, 0)
        if pad_h or pad_w:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_REFLECT_101)
        full_h, full_w = image.shape[:2]
        overlap_h = min(self.overlap, tile_h // 2) if full_h > tile_h else 0
        overlap_w = min(self.overlap, tile_w // 2) if full_w > tile_w else 0
        ys = _starts(full_h, tile_h, tile_h - overlap_h)
        xs = _starts(full_w, tile_w, tile_w - overlap_w)
        if len(ys) * len(xs) == 1:
            probs = self._window_probs(image[None])[0]
            return probs[:height, :width]
        weight = np.outer(_window(tile_h, overlap_h), _window(tile_w, overlap_w))[..., None]
        accumulated = np.zeros((full_h, full_w, self.num_classes), np.float32)
        norm = np.zeros((full_h, full_w, 1), np.float32)
        boxes = [(y, x) for y in ys for x in xs]
        for i in range(0, len(boxes), self.batch_size):
            chunk = boxes[i:i + self.batch_size]
            windows = np.stack([image[y:y + tile_h, x:x + tile_w] for y, x in chunk])
            for (y, x), probs in zip(chunk, self._window_probs(windows), strict=True):
                accumulated[y:y + tile_h, x:x + tile_w] += probs * weight
                norm[y:y + tile_h, x:x + tile_w] += weight
        return (accumulated / norm)[:height, :width]

    def batch_probabilities(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Probabilities for several images; same-size images up to ``tile`` go in one batch."""
        out = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for index, image in enumerate(images):
            h, w = image.shape[:2]
            if h <= self.tile and w <= self.tile and h % 32 == 0 and w % 32 == 0:
                groups.setdefault((h, w), []).append(index)
            else:
                out[index] = self.probabilities(image)
        for indices in groups.values():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start:start + self.batch_size]
                probs = self._window_probs(np.stack([images[i] for i in chunk]))
                for i, p in zip(chunk, probs, strict=True):
                    out[i] = p
        return out

    def mask(self, probs: np.ndarray) -> np.ndarray:
        """uint8 mask: {0, 1} for binary (threshold), class indices for N classes (argmax)."""
        if self.num_classes == 1:
            return (probs[..., 0] > (0.5 if self.vote else self.threshold)).astype(np.uint8)
        return probs.argmax(-1).astype(np.uint8)


def remove_small_components(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop connected components (8-connectivity) smaller than ``min_area`` pixels."""
    if min_area <= 1 or not mask.any():
        return mask
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels].astype(np.uint8)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions not connected to the image border."""
    if not mask.any():
        return mask
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    holes = flood == 0
    padded[holes] = 1
    return padded[1:-1, 1:-1]


def postprocess(mask: np.ndarray, min_area: int = 0, holes: bool = False) -> np.ndarray:
    mask = remove_small_components(mask, min_area)
    return fill_holes(mask) if holes else mask


def read_image(data: bytes, where: str) -> np.ndarray:
    """RGB uint8 from encoded bytes: grayscale, RGBA, palette and 16-bit images are converted."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageReadError(f"{where}: not a readable image ({len(data)} bytes)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def iter_images(source: str | os.PathLike) -> Iterator[tuple[str, Callable[[], np.ndarray]]]:
    """(name, loader) for the images of a file, a folder (sorted) or a zip (sorted)."""
    path = Path(source)
    if not path.exists():
        raise ImageReadError(f"{path}: no such image, folder or zip")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ImageReadError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        for file in files:
            yield file.name, (lambda f=file: read_image(f.read_bytes(), str(f)))
    elif path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = sorted(m for m in archive.namelist()
                             if m.lower().endswith(IMAGE_SUFFIXES) and "__MACOSX" not in m)
            for member in members:
                data = archive.read(member)
                yield Path(member).name, (lambda d=data, m=member: read_image(d, f"{path}:{m}"))
    else:
        yield path.name, (lambda: read_image(path.read_bytes(), str(path)))


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)
    if not ok:  # pragma: no cover
        raise RuntimeError(f"PNG encoding failed for {path}")
    path.write_bytes(data.tobytes())


OUTPUT_FORMATS = ("auto", "rle", "png-zip")


def predict_to_submission(predictor: Predictor, items, out=None, *, min_area: int = 0, holes: bool = False,
                          save_masks=None, save_overlays=None, output_format: str = "auto",
                          progress: Callable[[int], None] | None = None) -> dict:
    """Predict ``items`` ((name, loader) pairs) and write the submission ``out`` plus optional mask /
    overlay PNG folders.

    ``output_format``: ``rle`` (the Tianchi ``name<TAB>rle`` file; binary models only), ``png-zip``
    (a ``result.zip`` of single-channel class-index PNGs named like the images, the 地块分割 contest
    format; a binary model writes 0/1) or ``auto`` (rle for binary, png-zip for multi-class models).
    Returns {name: rle} (rle) or {name: predicted pixels per class} (png-zip).

    Nothing is left behind on error: the submission is written under a temporary name and renamed
    after every image has been predicted, and PNGs go to temporary folders moved into place only at
    the end.
    """
    from buildings.data.inspect import overlay_labels, overlay_mask
    from buildings.label_maps import ResultZipWriter

    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    binary = predictor.num_classes == 1
    if output_format == "auto":
        output_format = "rle" if binary else "png-zip"
    if output_format == "rle" and not binary:
        raise ValueError(f"an RLE submission needs a one-logit (binary) model; this one has "
                         f"{predictor.num_classes} classes: write a result.zip (png-zip) instead")
    if not binary and (min_area or holes):
        raise ValueError("min-area and fill-holes are binary post-processing; this model has "
                         f"{predictor.num_classes} classes")
    if out is not None and output_format == "png-zip" and Path(out).suffix.lower() != ".zip":
        raise ValueError(f"{out}: a png-zip submission is a .zip file (result.zip)")
    staging = {}
    for label, folder in (("masks", save_masks), ("overlays", save_overlays)):
        if folder is not None:
            Path(folder).parent.mkdir(parents=True, exist_ok=True)
            staging[label] = (Path(folder), Path(tempfile.mkdtemp(prefix=f".{label}-", dir=Path(folder).parent)))
    rows: dict = {}
    result_zip = None
    if out is not None and output_format == "png-zip":
        result_zip = ResultZipWriter(out, num_classes=max(2, predictor.num_classes))
    try:
        if result_zip is not None:
            result_zip.__enter__()
        pending: list[tuple[str, np.ndarray]] = []

        def flush():
            probabilities = predictor.batch_probabilities([image for _, image in pending])
            for (name, image), probs in zip(pending, probabilities, strict=True):
                mask = predictor.mask(probs)
                if binary:
                    mask = postprocess(mask, min_area, holes)
                if output_format == "rle":
                    rows[name] = encode_rle(mask)
                else:
                    rows[name] = np.bincount(mask.ravel(), minlength=max(2, predictor.num_classes)).tolist()
                if result_zip is not None:
                    result_zip.add(name, mask)
                stem = Path(name).stem
                if "masks" in staging:
                    _write_png(staging["masks"][1] / f"{stem}.png", mask * 255 if binary else mask)
                if "overlays" in staging:
                    shown = overlay_mask(image, mask) if binary else overlay_labels(image, mask)
                    _write_png(staging["overlays"][1] / f"{stem}.png", cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
                if progress:
                    progress(1)
            pending.clear()

        for name, load in items:
            if name in rows or any(name == n for n, _ in pending):
                raise ImageReadError(f"two input images are named {name!r}")
            pending.append((name, load()))
            if len(pending) >= predictor.batch_size:
                flush()
        if pending:
            flush()
        if result_zip is not None:
            result_zip.__exit__(None, None, None)
            result_zip = None
        if out is not None and output_format == "rle":
            write_submission(out, rows)
        for final, temporary in staging.values():
            final.mkdir(parents=True, exist_ok=True)
            for file in temporary.iterdir():
                os.replace(file, final / file.name)
    except BaseException as err:
        if result_zip is not None:
            result_zip.__exit__(type(err), err, None)
        raise
    finally:
        for _, temporary in staging.values():
            shutil.rmtree(temporary, ignore_errors=True)
    return rows


def split_items(data, split: str = "test", data_dir=None):
    """(name, loader) pairs of a built dataset's split, in stored order (sample-submit for test)."""
    from buildings.data.pipeline import decode_record, open_split

    source = open_split(data, split, data_dir)
    for index in range(len(source)):
        record = source[index]
        name = record["name"].decode() if isinstance(record["name"], bytes) else str(record["name"])
        yield name, (lambda r=record: decode_record(r)[0])


@dataclass
class Evaluation:
    """Scores of a model on a labelled split. Every model gets the pooled per-class IoU, mean IoU,
    frequency-weighted IoU and pixel accuracy (a binary model as 2 classes: background, building);
    binary models also get the contest Dice (``dice``) and its companions, NaN for multi-class."""

    class_iou: list
    miou: float
    fwiou: float
    accuracy: float
    n_images: int
    class_names: tuple = ()
    dice: float = float("nan")
    iou: float = float("nan")
    precision: float = float("nan")
    recall: float = float("nan")
    dice_with_buildings: float = float("nan")
    n_empty: int = 0
    per_image: list = field(default_factory=list)  # (name, score, iou) sorted worst first

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "per_image"}


DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.1, 0.91, 0.05), 2))


def evaluate(predictor: Predictor, data, split: str = "validation", data_dir=None, *, min_area: int = 0,
             holes: bool = False, thresholds: Sequence[float] | None = None, gallery=None, gallery_n: int = 8,
             progress: Callable[[int], None] | None = None):
    """Score checkpoint(s) on a labelled split: per-class IoU / mIoU / FWIoU / accuracy for every
    model, plus contest Dice, IoU, precision and recall for binary ones (pixels labelled 255 are
    left out of every score).

    With ``thresholds`` (binary), also returns {threshold: contest Dice} for each (tune-threshold),
    from the same single pass of predictions. With ``gallery``, writes a PNG of the worst images
    (binary: truth outlined in green, prediction in red; multi-class: truth | prediction colours).
    """
    from buildings.data.pipeline import decode_record, open_split
    from buildings.label_maps import confusion_matrix, score_confusion
    from buildings.submission import image_dice, image_iou

    source = open_split(data, split, data_dir)
    binary = predictor.num_classes == 1
    if (source.num_classes == 1) != binary or (not binary and source.num_classes != predictor.num_classes):
        raise ValueError(f"the model predicts {max(2, predictor.num_classes) if not binary else 'binary'} classes "
                         f"but {data} has {source.num_classes if source.num_classes > 1 else 'binary'} ones")
    if thresholds and not binary:
        raise ValueError("a threshold sweep is for binary models; a multi-class prediction is the argmax")
    if not binary and (min_area or holes):
        raise ValueError("min-area and fill-holes are binary post-processing")
    n_classes = max(2, predictor.num_classes)
    confusion = np.zeros((n_classes, n_classes), np.int64)
    sweep = {float(t): [] for t in (thresholds or ())}
    per_image, tp, fp, fn = [], 0, 0, 0
    built, empty = [], 0
    worst_pool = []
    for start in range(0, len(source), predictor.batch_size):
        records = [source[i] for i in range(start, min(start + predictor.batch_size, len(source)))]
        decoded = [decode_record(r) for r in records]
        if not all(bool(r.get("has_mask", True)) for r in records):
            raise ValueError(f"split {split!r} has images without masks: it cannot be evaluated")
        probabilities = predictor.batch_probabilities([image for image, _ in decoded])
        for record, (image, truth), probs in zip(records, decoded, probabilities, strict=True):
            name = record["name"].decode() if isinstance(record["name"], bytes) else str(record["name"])
            labels = predictor.mask(probs)
            if binary:
                labels = postprocess(labels, min_area, holes)
            image_confusion = confusion_matrix(truth, labels, n_classes)
            confusion += image_confusion
            if binary:
                pred, truth = labels.astype(bool), truth.astype(bool)
                score, iou = image_dice(pred, truth), image_iou(pred, truth)
                tp += int(np.count_nonzero(pred & truth))
                fp += int(np.count_nonzero(pred & ~truth))
                fn += int(np.count_nonzero(~pred & truth))
                if truth.any():
                    built.append(score)
                else:
                    empty += 1
                for t in sweep:
                    swept = postprocess((probs[..., 0] > t).astype(np.uint8), min_area, holes).astype(bool)
                    sweep[t].append(image_dice(swept, truth))
            else:  # per image: pixel accuracy and mean IoU over the classes it shows
                image_score = score_confusion(image_confusion)
                score, iou = image_score.accuracy, image_score.miou
            per_image.append((name, score, iou))
            if gallery is not None:
                worst_pool.append((score, name, image, truth, labels))
                worst_pool = sorted(worst_pool, key=lambda item: item[0])[:gallery_n]
            if progress:
                progress(1)
    per_image.sort(key=lambda row: row[1])
    pooled = score_confusion(confusion, len(per_image))
    names = source.class_names if not binary else ("background", "building")
    result = Evaluation(class_iou=pooled.class_iou, miou=pooled.miou, fwiou=pooled.fwiou,
                        accuracy=pooled.accuracy, n_images=len(per_image), per_image=per_image,
                        class_names=tuple(names) if len(names) == n_classes else ())
    if binary:
        result.dice = float(np.mean([d for _, d, _ in per_image]))
        result.iou = float(np.mean([i for _, _, i in per_image]))
        result.precision, result.recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        result.dice_with_buildings = float(np.mean(built)) if built else float("nan")
        result.n_empty = empty
    if gallery is not None:
        _write_gallery(gallery, worst_pool, binary)
    if thresholds:
        return result, {t: float(np.mean(v)) for t, v in sweep.items()}
    return result


def _write_gallery(path, items, binary: bool = True, tile: int = 320) -> None:
    """Worst images with their name and score. Binary: truth outlined in green, prediction in red.
    Multi-class: truth colours on the left half, prediction colours on the right."""
    from buildings.data.inspect import overlay_labels, write_grid_png

    tiles = []
    for score, name, image, truth, pred in items:
        if binary:
            shown = image.copy()
            for mask, colour in ((truth, (0, 255, 0)), (pred, (255, 0, 0))):
                contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
                cv2.drawContours(shown, contours, -1, colour, 2)
            shown = cv2.resize(shown, (tile, tile), interpolation=cv2.INTER_AREA)
            label = f"{name} dice {score:.3f}"
        else:
            half = (tile // 2, tile // 2)
            shown = np.hstack([cv2.resize(overlay_labels(image, truth), half, interpolation=cv2.INTER_NEAREST),
                               cv2.resize(overlay_labels(image, pred), half, interpolation=cv2.INTER_NEAREST)])
            label = f"{name} acc {score:.3f}"
        cv2.putText(shown, label, (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 2)
        tiles.append(shown)
    write_grid_png(path, tiles, columns=4)
