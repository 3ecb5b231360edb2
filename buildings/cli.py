"""The ``buildings`` command line: thin wrappers that parse options, call one library function
and print. Every command here works end to end; there are no placeholders.

Errors the user can fix (:class:`buildings.errors.BuildingsError` and its kinds) and operating-system
errors are printed as one ``Error: ...`` line (at most 400 characters) with exit status 1; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import click

import buildings
from buildings.errors import BuildingsError


def parse_shape(value: str) -> tuple[int, int]:
    """``512`` or ``512x512`` (height x width) → (512, 512), at most 16384x16384 pixels in all."""
    from buildings.formats.rle import MAX_PIXELS

    parts = value.lower().replace("*", "x").split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{value[:40]!r}: expected HEIGHTxWIDTH such as 512x512") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or min(numbers) < 1:
        raise click.BadParameter(f"{value[:40]!r}: expected HEIGHTxWIDTH such as 512x512")
    if numbers[0] * numbers[1] > MAX_PIXELS:
        raise click.BadParameter(f"{numbers[0]}x{numbers[1]} is more than the {MAX_PIXELS:,} pixels (16384x16384) "
                                 "a mask may have")
    return numbers[0], numbers[1]


class ShapeType(click.ParamType):
    name = "HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return parse_shape(value)
        except click.BadParameter as err:
            self.fail(str(err), param, ctx)


class FloatList(click.ParamType):
    """Comma-separated numbers: ``2,1`` → [2.0, 1.0]."""

    name = "NUMBERS"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return [float(v) for v in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r}: expected comma-separated numbers such as 2,1", param, ctx)


MESSAGE_LIMIT = 400  # characters of an error line
DATA_DIR_HELP = "TFDS data_dir that --data names are looked up in [default: $TFDS_DATA_DIR or ~/tensorflow_datasets]."


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """An error message as one line of at most ``limit`` characters."""
    message = " | ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return message if len(message) <= limit else message[:limit - 3] + "..."


class BatchSize(click.ParamType):
    """A positive number, or ``auto``."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if value == "auto" or isinstance(value, int):
            return value
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            self.fail(f"{value!r}: expected a positive number or auto", param, ctx)
        return number


class BuildingsGroup(click.Group):
    """A click group that prints the package's own errors, and operating-system errors (a full
    disk, a missing permission), as one ``Error:`` line with exit status 1. Anything else is a bug
    and keeps its traceback."""

    def invoke(self, ctx):
        from buildings.files import os_error_message

        try:
            return super().invoke(ctx)
        except BuildingsError as err:
            raise click.ClickException(one_line(str(err))) from None
        except OSError as err:
            raise click.ClickException(one_line(os_error_message(err))) from None


@click.group(cls=BuildingsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(buildings.__version__, prog_name="buildings")
def main():
    """Aerial images to building masks: Tianchi-style RLE submissions and scoring."""


@main.command()
@click.argument("submission", type=click.Path(exists=True))
@click.argument("truth", type=click.Path(exists=True))
@click.option("--shape", type=ShapeType(), default="512x512", show_default=True,
              help="Image shape the RLE refers to (HEIGHTxWIDTH).")
@click.option("--num-classes", type=click.IntRange(2, 255), default=None,
              help="Label maps: number of classes [default: 4].")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object.")
def score(submission, truth, shape, num_classes, as_json):
    """Score SUBMISSION against TRUTH.

    RLE files (name<TAB>rle, .csv or .zip; Tianchi): the mean over images of per-image Dice, 1 when
    both masks are empty. Label maps (a result.zip or a folder of PNGs against a folder or zip of
    truth PNGs such as lab_testA/; 地块分割): per-class IoU, mIoU, FWIoU and pixel accuracy over all
    pixels, truth 255 left out."""
    from buildings.formats.label_maps import is_label_map_source, score_label_maps
    from buildings.formats.submission import score_submission

    if is_label_map_source(submission) or is_label_map_source(truth):
        labels = score_label_maps(submission, truth, num_classes or 4)
        if as_json:
            click.echo(json.dumps(labels.as_dict()))
            return
        click.echo(f"images          {labels.n_images}")
        click.echo(f"mIoU            {labels.miou:.6f}")
        click.echo(f"FWIoU           {labels.fwiou:.6f}")
        click.echo(f"pixel accuracy  {labels.accuracy:.6f}")
        click.echo("IoU per class   " + "  ".join(f"{i}: {v:.4f}" for i, v in enumerate(labels.class_iou)))
        return
    if num_classes is not None:
        raise click.UsageError("--num-classes is for label maps; these are RLE files")
    result = score_submission(submission, truth, shape=shape)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    n_built = result.n_images - result.n_truth_empty
    built = "n/a" if math.isnan(result.dice_with_buildings) else f"{result.dice_with_buildings:.6f}"
    click.echo(f"images                         {result.n_images}")
    click.echo(f"contest score (mean image Dice) {result.dice:.6f}")
    click.echo(f"mean image IoU                 {result.iou:.6f}")
    click.echo(f"Dice on images with buildings  {built}  ({n_built} images)")
    click.echo(f"empty images predicted empty   {result.empty_predicted_empty}/{result.n_truth_empty}")


@main.command("check-result")
@click.argument("result", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", required=True, type=click.Path(exists=True),
              help="The test images (folder or zip, e.g. img_testA/) the result answers.")
@click.option("--num-classes", type=click.IntRange(2, 255), default=4, show_default=True,
              help="Classes the label maps may hold (values 0..N-1, 255 = unlabelled).")
def check_result_command(result, images, num_classes):
    """Check a result.zip against the 地块分割 contest rules: one PNG per test image, named like it
    (.png), at the zip root, single-channel 8-bit, the image's size, values 0..N-1."""
    from buildings.formats.images import iter_images
    from buildings.formats.label_maps import check_result_zip

    shapes = {name: load().shape[:2] for name, load in iter_images(images)}
    checked = check_result_zip(result, shapes, num_classes)
    total = max(sum(checked.class_pixels), 1)
    shares = " ".join(f"{100 * c / total:.1f}" for c in checked.class_pixels)
    click.echo(f"{result}: OK, {checked.n_files} PNGs for {len(shapes)} test images; class shares % {shares}")


@main.group()
def data():
    """Build, inspect and synthesise datasets."""


@data.command("build")
@click.option("--manual-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder with the contest files (zips or extracted).")
@click.option("--dataset", default="tianchi_buildings", show_default=True,
              type=click.Choice(["tianchi_buildings", "land_parcels"]),
              help="tianchi_buildings: the Tianchi download (zips + RLE CSVs); land_parcels: "
                   "img_train/ + lab_train/ + img_testA/ folders of a multi-class contest.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="TFDS data_dir to write into [default: $TFDS_DATA_DIR or ~/tensorflow_datasets].")
@click.option("--config", default="val5", show_default=True, type=click.Choice(["val5", "val10", "val20"]),
              help="tianchi_buildings: validation hold-out, 5, 10 or 20 percent of train.")
@click.option("--num-classes", default=None, type=click.IntRange(2, 255),
              help="land_parcels: number of classes (label values 0..N-1; 255 = unlabelled) [default: the "
                   "lines of classes.txt in --manual-dir, else 4].")
@click.option("--validation-percent", default=5.0, show_default=True, type=click.FloatRange(0, 100),
              help="land_parcels: percent of train held out for validation.")
@click.option("--overwrite", is_flag=True, help="Rebuild even if the dataset exists.")
def data_build(manual_dir, dataset, data_dir, config, num_classes, validation_percent, overwrite):
    """Package a contest download as a TFDS dataset (array_record, no TensorFlow needed)."""
    import time

    started = time.time()
    if dataset == "land_parcels":
        from buildings.data.tfds.land_parcels import build_land_parcels

        path = build_land_parcels(manual_dir, data_dir, num_classes=num_classes,
                                  validation_percent=validation_percent, overwrite=overwrite)
    else:
        from buildings.data.tfds.tianchi_buildings import build_dataset

        path = build_dataset(manual_dir, data_dir, config=config, overwrite=overwrite)
    if (path / "dataset_info.json").stat().st_mtime < started:  # the builders keep a complete dataset
        click.echo(f"already built: {path} (kept as it is; --overwrite rebuilds it)")
    else:
        click.echo(f"built {path}")


@data.command("import-labelme")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write into: img_train/, lab_train/ and classes.txt (then: data build "
                   "--dataset land_parcels --manual-dir OUT), or train/ and train_mask.csv with --layout "
                   "tianchi (then: data build --manual-dir OUT).")
@click.option("--labels", required=True, metavar="NAME[,NAME...]",
              help="The polygon labels, in class order: they become classes 1..N (0 is background; "
                   "__ignore__ polygons become 255, unlabelled).")
@click.option("--layout", type=click.Choice(["folders", "tianchi"]), default="folders", show_default=True,
              help="folders: the multi-class layout (land_parcels). tianchi: the contest's own layout, "
                   "train/ + train_mask.csv (RLE), for one label and 512x512 images (tianchi_buildings).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
def data_import_labelme(source, out, labels, layout, overwrite):
    """Turn a labelme project (image + .json per image, polygons or rectangles) into the folder
    layout the multi-class builder reads, or the contest's layout for one class. Unknown labels and
    points outside the image are refused, naming the file and the shape; nothing is written unless
    every file converts."""
    from buildings.formats.labelme import import_labelme

    counts = import_labelme(source, out, labels.split(","), layout=layout, overwrite=overwrite)
    total = max(sum(counts["pixels"]), 1)
    shares = ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in zip(counts["classes"], counts["pixels"],
                                                                          strict=True))
    masks, build = ("train_mask.csv", "") if layout == "tianchi" else ("label PNGs", "--dataset land_parcels ")
    click.echo(f"wrote {counts['images']} images and {masks} to {out} ({shares}); next: buildings data build "
               f"{build}--manual-dir {out}")


@data.command("stats")
@click.option("--data", "data_", default="tianchi_buildings", show_default=True,
              help="Dataset name (under --data-dir) or folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=DATA_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
def data_stats(data_, data_dir, as_json):
    """Counts, building-pixel fraction, empty tiles and per-channel mean/std of each split."""
    from buildings.data.splits import open_split
    from buildings.data.stats import dataset_stats

    total = sum(len(open_split(data_, s, data_dir)) for s in ("train", "validation", "test"))
    with click.progressbar(length=total, label="reading", file=sys.stderr) as bar:
        stats = dataset_stats(data_, data_dir=data_dir, progress=bar.update)
    if as_json:
        click.echo(json.dumps(stats))
        return
    multi = any("class_fraction" in s for s in stats.values())
    label = "class % (unlabelled %)" if multi else "building %"
    click.echo(f"{'split':<11}{'images':>7}{'masked':>7}{'empty':>7}  {label}  mean RGB / std RGB")
    for split, s in stats.items():
        if multi:
            fraction = "-" if not s["with_mask"] else (
                " ".join(f"{k} {100 * v:.1f}" for k, v in s["class_fraction"].items())
                + f" ({100 * s['unlabelled_fraction']:.1f})")
        else:
            fraction = "-" if math.isnan(s["building_fraction"]) else f"{100 * s['building_fraction']:.2f}"
        click.echo(f"{split:<11}{s['images']:>7}{s['with_mask']:>7}{s['empty_masks']:>7}  {fraction}  "
                   f"{s['mean_rgb']} / {s['std_rgb']}")


@data.command("preview")
@click.option("--data", "data_", default="tianchi_buildings", show_default=True,
              help="Dataset name (under --data-dir) or folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=DATA_DIR_HELP)
@click.option("--split", default="train", show_default=True, help="Split to draw from (train, validation, test).")
@click.option("--n", default=16, show_default=True, type=click.IntRange(1, 256), help="Images in the figure.")
@click.option("--seed", default=0, show_default=True, help="Seed of the random choice of images.")
@click.option("--out", default="preview.png", show_default=True, type=click.Path(dir_okay=False),
              help="PNG file to write.")
def data_preview(data_, data_dir, split, n, seed, out):
    """A PNG grid of images with their building masks outlined."""
    from buildings.data.stats import preview_grid

    path = preview_grid(data_, out, split=split, n=n, seed=seed, data_dir=data_dir)
    click.echo(f"wrote {path}")


@data.command("synth")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write the contest-style download into.")
@click.option("--n", default=64, show_default=True, type=click.IntRange(2, None), help="Tiles in all.")
@click.option("--seed", default=0, show_default=True, help="Seed of the synthetic scenes.")
@click.option("--layout", default="tianchi", show_default=True, type=click.Choice(["tianchi", "parcels"]),
              help="tianchi: 512x512 binary tiles as the Tianchi download; parcels: 256x256 multi-class "
                   "tiles as img_train/ lab_train/ img_testA/ (+ lab_testA/ truth).")
@click.option("--num-classes", default=4, show_default=True, type=click.Choice(["2", "4", "7"]),
              help="parcels: number of classes.")
def data_synth(out, n, seed, layout, num_classes):
    """Write synthetic tiles in a contest's exact layout, with the test truth for local scoring."""
    from buildings.data.synth import write_synthetic_contest, write_synthetic_parcels

    if layout == "parcels":
        paths = write_synthetic_parcels(out, n, num_classes=int(num_classes), seed=seed)
    else:
        paths = write_synthetic_contest(out, n, seed=seed)
    click.echo(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


# (flag name, FitConfig field, click type, help); defaults come from FitConfig.
FIT_OPTIONS = [
    ("--model", "model", click.Choice(["unet", "attunet", "deeplabv3plus", "fcn"]), "Architecture."),
    ("--data", "data", str, "Dataset name (under --data-dir) or folder, e.g. tianchi_buildings/val10."),
    ("--data-dir", "data_dir", str, DATA_DIR_HELP),
    ("--epochs", "epochs", click.IntRange(1), "Epochs in all (both stages)."),
    ("--batch-size", "batch_size", click.IntRange(1), "Images per training batch."),
    ("--eval-batch-size", "eval_batch_size", click.IntRange(1),
     "Validation images per batch [default: as many full images as fit the memory budget]."),
    ("--image-size", "image_size", click.IntRange(32), "Training crop / resize side (multiple of 32)."),
    ("--resize-mode", "resize_mode", click.Choice(["crop", "resize"]), "Random crops or resizing."),
    ("--lr", "lr", float, "Peak learning rate (AdamW, warmup then cosine decay per step)."),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay."),
    ("--warmup-epochs", "warmup_epochs", float, "Linear warmup length in epochs."),
    ("--clip-norm", "clip_norm", float, "Global gradient-norm clipping."),
    ("--loss", "loss", click.Choice(["bce", "dice", "bce_dice", "lovasz_hinge", "focal", "ce",
                                     "lovasz_softmax", "multiclass_dice", "ce_lovasz"]),
     "Loss [default: bce_dice for binary data, ce_lovasz for multi-class]."),
    ("--aug", "aug", click.Choice(["none", "light", "strong"]), "Augmentation preset."),
    ("--augment-on", "augment_on", click.Choice(["auto", "cpu", "device"]),
     "Where augmentation runs: cpu (albumentations in the loader workers), device (batched in the "
     "training step, keras.ops), auto (device with a GPU, cpu without)."),
    ("--cutmix", "cutmix", click.FloatRange(0, 1), "Per-sample CutMix probability."),
    ("--precision", "precision", click.Choice(["auto", "bf16", "fp16", "fp32"]), "Mixed precision."),
    ("--encoder", "encoder", str, "keras.applications encoder (resnet50, efficientnetv2b0, ...; none)."),
    ("--encoder-weights", "encoder_weights", str, "imagenet, a local weights file, or none."),
    ("--freeze-encoder-epochs", "freeze_encoder_epochs", click.IntRange(0), "Train with the encoder frozen first."),
    ("--num-classes", "num_classes", click.IntRange(1),
     "1 = binary logit; N = N classes [default: the dataset's]; must match the dataset."),
    ("--class-weights", "class_weights", str,
     "Multi-class CE weights: auto (1/sqrt of train pixel frequency), none, or N comma-separated numbers."),
    ("--threshold", "threshold", click.FloatRange(0, 1, min_open=True, max_open=True), "Metric threshold."),
    ("--seed", "seed", int, "Seed of weights, order and augmentation."),
    ("--steps-per-epoch", "steps_per_epoch", click.IntRange(1), "Cap on training steps per epoch."),
    ("--early-stopping", "early_stopping", click.IntRange(0), "Patience in epochs (0 = off)."),
    ("--max-minutes", "max_minutes", click.FloatRange(0, min_open=True), "Stop after this wall-time budget."),
    ("--workers", "workers", click.IntRange(1), "Loader workers (threads)."),
    ("--run-dir", "run_dir", str, "Run directory [default: runs/<model>-<time>]."),
    ("--folds", "folds", click.IntRange(2),
     "k-fold: split the training images into N folds by a hash of their names (the validation split stays "
     "out, to tune and score the bag)."),
    ("--fold", "fold", click.IntRange(1), "k-fold: the fold (1..N) to validate on; train on the others."),
]


def _fit_options(function):
    from buildings.config import FitConfig

    defaults = FitConfig()
    for flag, name, kind, text in reversed(FIT_OPTIONS):
        function = click.option(flag, name, type=kind, default=getattr(defaults, name), show_default=True,
                                help=text)(function)
    return function


@main.command("fit")
@_fit_options
@click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE",
              help="Extra model option, e.g. filters=32 or decoder_attention=cbam (repeatable).")
@click.option("--tensorboard", is_flag=True, help="Write TensorBoard logs (needs the tf extra).")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False),
              help="Options from a JSON file (a run's config.json); flags given here override it.")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False),
              help="Continue the run in this directory from its last finished epoch.")
@click.pass_context
def fit_command(ctx, model_option, tensorboard, config_file, resume_dir, **flags):
    """Train a model with model.fit on the active Keras backend (torch unless KERAS_BACKEND says
    otherwise), on the GPU when one is visible."""
    import shlex

    from click.core import ParameterSource

    from buildings.training import fit, make_fit_config

    given = {k: v for k, v in flags.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
    if tensorboard:
        given["tensorboard"] = True
    config = make_fit_config(flags=given, model_options=model_option, config_file=config_file,
                             resume_dir=resume_dir)
    click.echo(f"backend {_device()}; model {config.model}; data {config.data}", err=True)
    if resume_dir:
        from buildings.training.run_dir import RunDirectory

        finished = RunDirectory(resume_dir).finished_epochs()
        click.echo(f"resuming {resume_dir} after epoch {finished} of {config.epochs}", err=True)
    result = fit(config, resume=bool(resume_dir), command=shlex.join(sys.argv))
    best = "n/a" if result.best_score is None else f"{result.best_score:.4f} (epoch {result.best_epoch})"
    if result.stop_reason:
        click.echo(result.stop_reason, err=True)
    last = result.initial_epoch + result.epochs_run
    done = f"epochs {result.initial_epoch + 1}..{last}" if result.epochs_run else "no epoch left to run"
    click.echo(f"run {result.run_dir}: {done} of {config.epochs} in {result.wall_seconds:.0f} s; "
               f"best validation score {best}")


def _predictor_options(function=None, *, threshold: bool = True, post: bool = True, tuned: bool = True):
    """The options every prediction command shares; ``threshold=False`` / ``post=False`` where the
    command finds the threshold / the post-processing itself, ``tuned=False`` where a tuned choice
    (``--postprocess``) does not apply."""
    if function is None:
        return lambda f: _predictor_options(f, threshold=threshold, post=post, tuned=tuned)
    options = [
        click.option("--checkpoint", "checkpoints", multiple=True, required=True,
                     type=click.Path(dir_okay=False), help="A .keras checkpoint; repeat for an ensemble."),
        click.option("--weights", type=FloatList(), default=None,
                     help="Ensemble weights, comma-separated (default equal)."),
        click.option("--vote", is_flag=True, help="Ensemble by per-pixel majority vote instead of mean."),
        click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
                     help="Test-time augmentation (mean of probabilities)."),
        *([click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.5,
                        show_default=True, help="Probability above which a pixel is a building (binary "
                                                "models; `buildings tune` finds the best).")]
          if threshold else []),
        *([click.option("--min-area", type=click.IntRange(0), default=0, show_default=True,
                        help="Drop predicted components smaller than this many pixels."),
           click.option("--fill-holes", is_flag=True, help="Fill holes inside predicted buildings.")]
          if post else []),
        *([click.option("--postprocess", "postprocess_from", default="auto", show_default=True,
                        help="Tuned post-processing to apply: auto (the postprocess.json `buildings tune` wrote "
                             "beside the first checkpoint, if any), none, or a postprocess.json path; "
                             "--threshold, --min-area and --fill-holes given here override it.")]
          if tuned else []),
        click.option("--tile", type=click.IntRange(32), default=512, show_default=True,
                     help="Window side for larger images (multiple of 32)."),
        click.option("--overlap", type=click.IntRange(0), default=128, show_default=True,
                     help="Overlap of neighbouring windows, blended."),
        click.option("--batch-size", type=BatchSize(), default="auto", show_default=True,
                     help="Windows per model call; auto: as many as fit half the free GPU memory, or 2 GiB "
                          "on a CPU."),
        click.option("--data", "data_", default="tianchi_buildings", show_default=True,
                     help="Dataset name (under --data-dir) or folder."),
        click.option("--data-dir", type=click.Path(file_okay=False), default=None, help=DATA_DIR_HELP),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _postprocessing(ctx, checkpoints, threshold, min_area, fill_holes, postprocess_from):
    """(threshold, Postprocess) to apply: the tuned choice (``--postprocess``), with the flags given on
    the command line overriding it; says on stderr what is applied and where it came from."""
    from click.core import ParameterSource

    from buildings.inference import Postprocess, choice_path, load_choice

    given = {name for name in ("threshold", "min_area", "fill_holes")
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    path = None
    if postprocess_from == "auto":
        candidate = choice_path(checkpoints[0])
        path = candidate if candidate.is_file() else None
    elif postprocess_from != "none":
        path = Path(postprocess_from)
        if not path.is_file():
            raise click.BadParameter(f"{path}: no such file", param_hint="--postprocess")
    if path is None:
        post = Postprocess(min_area, fill_holes)
        source = "flags"
    else:
        choice = load_choice(path)
        threshold = threshold if "threshold" in given else choice.threshold
        post = dataclasses.replace(choice.postprocess, **{k: v for k, v in (("min_area", min_area),
                                                                             ("fill_holes", fill_holes)) if k in given})
        source = f"{path}" + (f", overridden by --{', --'.join(sorted(given)).replace('_', '-')}" if given else "")
    click.echo(f"post-processing: threshold {threshold:g}, {post.describe()} (from {source})", err=True)
    return threshold, post


def _make_predictor(checkpoints, weights, vote, tta, threshold, tile, overlap, batch_size):
    from buildings.inference import Predictor

    return Predictor.from_checkpoints(checkpoints, tta=tta, weights=weights, vote=vote, threshold=threshold,
                                      tile=tile, overlap=overlap, batch_size=batch_size)


def _bar(length, label, unit="images"):
    """click's progress bar on a terminal; plain lines (every 5 %, with rate and ETA) in logs and CI."""
    if sys.stderr.isatty():
        return click.progressbar(length=length, label=label, file=sys.stderr)
    from buildings.progress import LineBar

    return LineBar(length, label, unit=unit, write=lambda line: click.echo(line, err=True))


@main.command("predict")
@_predictor_options
@click.option("--images", type=click.Path(), default=None,
              help="Predict these instead of the dataset's test split: an image, a folder or a zip.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Submission file to write (name<TAB>rle lines).")
@click.option("--save-masks", type=click.Path(file_okay=False), default=None, help="Folder for mask PNGs.")
@click.option("--save-overlays", type=click.Path(file_okay=False), default=None, help="Folder for overlay PNGs.")
@click.option("--format", "output_format", type=click.Choice(["auto", "rle", "png-zip"]), default="auto",
              show_default=True, help="rle: name<TAB>rle lines (Tianchi; binary models); png-zip: result.zip "
              "of class-index PNGs named like the images (地块分割); auto: rle for binary models, png-zip "
              "for multi-class ones.")
@click.option("--bands", default=None, metavar="R,G,B",
              help="GeoTIFF input: the 1-based bands to read as red, green, blue (or one band as grey) "
                   "[default: 1,2,3, or 1 for a single-band raster]. 16-bit rasters are scaled to 8 bits by "
                   "each band's 2-98 percentiles (said on stderr).")
@click.option("--vectorize", type=click.Path(dir_okay=False), default=None,
              help="GeoTIFF input: write one polygon per building (.gpkg or .geojson) in the raster's CRS, "
                   "with area (m² when projected) and mean probability; --min-area drops small ones.")
@click.option("--simplify", type=click.FloatRange(0), default=1.0, show_default=True,
              help="--vectorize: outline simplification tolerance, in pixels (0 keeps the pixel staircase).")
@click.pass_context
def predict_command(ctx, checkpoints, weights, vote, tta, threshold, min_area, fill_holes, postprocess_from, tile,
                    overlap, batch_size, data_, data_dir, images, out, save_masks, save_overlays, output_format,
                    bands, vectorize, simplify):
    """Predict masks and write the contest submission: the Tianchi RLE file (test split in
    sample-submit order) for binary models, a result.zip of label PNGs for multi-class ones.

    A GeoTIFF given to --images (one .tif file with a CRS) is streamed through in blocks whatever its
    size: --save-masks writes a georeferenced GeoTIFF mask there, --vectorize building polygons."""
    from buildings.data.splits import open_split, split_items
    from buildings.formats.images import iter_images
    from buildings.geo.raster import is_geotiff, parse_bands
    from buildings.inference import write_predictions

    if images and is_geotiff(images) and _has_crs(images):
        if out or save_overlays:
            raise click.UsageError("a GeoTIFF predicts into --save-masks (a GeoTIFF mask) and --vectorize; "
                                   "--out and --save-overlays are for image tiles")
        if not (save_masks or vectorize):
            raise click.UsageError("nothing to write: give --save-masks or --vectorize")
        threshold, post = _postprocessing(ctx, checkpoints, threshold, min_area, fill_holes, postprocess_from)
        predictor = _make_predictor(checkpoints, weights, vote, tta, threshold, tile, overlap, batch_size)
        _predict_geotiff(predictor, images, threshold, post, parse_bands(bands), save_masks, vectorize, simplify)
        return
    if bands or vectorize:
        raise click.UsageError("--bands and --vectorize are for a GeoTIFF given to --images (a .tif with a CRS)")
    if not (out or save_masks or save_overlays):
        raise click.UsageError("nothing to write: give --out, --save-masks or --save-overlays")
    threshold, post = _postprocessing(ctx, checkpoints, threshold, min_area, fill_holes, postprocess_from)
    predictor = _make_predictor(checkpoints, weights, vote, tta, threshold, tile, overlap, batch_size)
    data_task = None
    if images:
        items = list(iter_images(images))
    else:
        source = open_split(data_, "test", data_dir)
        items, data_task = list(split_items(source)), source.task
    click.echo(f"{len(predictor.models)} model(s), tta {tta}, {_device(predictor.models)}", err=True)
    with _bar(len(items), "predicting") as bar:
        report = write_predictions(predictor, items, out, postprocess=post,
                                   save_masks=save_masks, save_overlays=save_overlays,
                                   output_format=output_format, data_task=data_task, progress=bar.update)
    click.echo(report.describe() + (f"; wrote {out}" if out else ""))


def _has_crs(path) -> bool:
    try:
        import rasterio
    except ImportError:
        return False
    try:
        with rasterio.open(path) as dataset:
            return dataset.crs is not None
    except rasterio.errors.RasterioIOError:
        return False


def _predict_geotiff(predictor, image, threshold, post, bands, save_masks, vectorize, simplify):
    from buildings.geo.predict import block_count, predict_raster

    if post.empty_below_area or post.empty_below_peak:
        click.echo("post-processing: the empty-tile gates are for contest tiles; not applied to a raster", err=True)
    mask_out = Path(save_masks) / (Path(image).stem + ".tif") if save_masks else None
    click.echo(f"{len(predictor.models)} model(s), tta {predictor.tta}, {_device(predictor.models)}", err=True)
    with _bar(block_count(image), "predicting", unit="blocks") as bar:
        report = predict_raster(predictor, image, threshold=threshold, postprocess=post, bands=bands,
                                mask_out=mask_out, vectorize_out=vectorize, simplify=simplify,
                                progress=bar.update, log=lambda line: click.echo(line, err=True))
    wrote = [str(p) for p in (mask_out, vectorize) if p]
    click.echo(report.describe() + f"; wrote {', '.join(wrote)}")


@main.command("evaluate")
@_predictor_options
@click.option("--split", default="validation", show_default=True, help="Labelled split to score.")
@click.option("--gallery", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG figure of the 8 worst images (truth vs prediction, with scores).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object.")
@click.pass_context
def evaluate_command(ctx, checkpoints, weights, vote, tta, threshold, min_area, fill_holes, postprocess_from, tile,
                     overlap, batch_size, data_, data_dir, split, gallery, as_json):
    """Scores of checkpoint(s) on a labelled split: contest Dice, IoU, precision and recall for
    binary models; per-class IoU, mIoU, FWIoU and pixel accuracy for every model."""
    from buildings.data.splits import open_split
    from buildings.inference import evaluate

    threshold, post = _postprocessing(ctx, checkpoints, threshold, min_area, fill_holes, postprocess_from)
    predictor = _make_predictor(checkpoints, weights, vote, tta, threshold, tile, overlap, batch_size)
    source = open_split(data_, split, data_dir)
    with _bar(len(source), "evaluating") as bar:
        result = evaluate(predictor, source, postprocess=post, gallery=gallery,
                          progress=bar.update)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    _print_evaluation(result)
    if gallery:
        click.echo(f"wrote {gallery}")


def _print_evaluation(result) -> None:
    if not math.isnan(result.dice):
        click.echo(f"images {result.n_images} ({result.n_empty} without buildings)")
        click.echo(f"contest Dice {result.dice:.4f}  IoU {result.iou:.4f}  precision {result.precision:.4f}  "
                   f"recall {result.recall:.4f}  Dice on images with buildings {result.dice_with_buildings:.4f}")
    else:
        click.echo(f"images {result.n_images}")
    click.echo(f"mIoU {result.miou:.4f}  FWIoU {result.fwiou:.4f}  pixel accuracy {result.accuracy:.4f}")
    names = result.class_names or [str(i) for i in range(len(result.class_iou))]
    click.echo("IoU per class: " + "  ".join(f"{n} {v:.4f}" for n, v in zip(names, result.class_iou, strict=True)))
    click.echo("worst: " + ", ".join(f"{n} {d:.3f}" for n, d, _ in result.per_image[:5]))


@main.command("tune-threshold")
@_predictor_options(threshold=False, tuned=False)
@click.option("--split", default="validation", show_default=True,
              help="Labelled split to tune on (never the test split).")
def tune_threshold_command(checkpoints, weights, vote, tta, min_area, fill_holes, tile, overlap,
                           batch_size, data_, data_dir, split):
    """The probability threshold that maximises contest Dice on a labelled split (0.10..0.90)."""
    from buildings.data.splits import open_split
    from buildings.inference import DEFAULT_THRESHOLDS, Postprocess, evaluate

    predictor = _make_predictor(checkpoints, weights, vote, tta, 0.5, tile, overlap, batch_size)
    source = open_split(data_, split, data_dir)
    with _bar(len(source), "evaluating") as bar:
        result = evaluate(predictor, source, postprocess=Postprocess(min_area, fill_holes),
                          thresholds=DEFAULT_THRESHOLDS, progress=bar.update)
    sweep, best = result.threshold_dice, result.best_threshold
    for t, dice in sweep.items():
        click.echo(f"threshold {t:.2f}  contest Dice {dice:.4f}" + ("  <- best" if t == best else ""))
    click.echo(f"best threshold {best:.2f} (contest Dice {sweep[best]:.4f}); use --threshold {best:.2f}")


@main.command("tune")
@_predictor_options(threshold=False, post=False, tuned=False)
@click.option("--split", default="validation", show_default=True,
              help="Labelled split to tune on (the test split is refused).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the choice [default: postprocess.json beside the first checkpoint, which "
                   "predict and evaluate then apply].")
def tune_command(checkpoints, weights, vote, tta, tile, overlap, batch_size, data_, data_dir, split, out):
    """Tune the threshold, min-area, hole filling and an empty-tile gate jointly for the contest Dice
    on the validation split; write them where `buildings predict` applies them by default."""
    from buildings.data.splits import open_split
    from buildings.inference import choice_path, save_choice, tune_postprocess

    if split == "test":
        raise click.BadParameter("tuning on the test split would score the test on what was tuned on it",
                                 param_hint="--split")
    predictor = _make_predictor(checkpoints, weights, vote, tta, 0.5, tile, overlap, batch_size)
    source = open_split(data_, split, data_dir)
    with _bar(len(source), "predicting") as bar:
        choice = tune_postprocess(predictor, source, checkpoints=checkpoints, progress=bar.update)
    for label, dice in choice.steps:
        click.echo(f"{label:<40} contest Dice {dice:.4f}")
    path = save_choice(choice, out or choice_path(checkpoints[0]))
    click.echo(f"chosen: {choice.describe()}: contest Dice {choice.score:.4f} on {split} "
               f"(baseline {choice.baseline:.4f}); wrote {path}")


@main.command("export")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The .keras checkpoint to export.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "saved_model", "torch"]), default="onnx",
              show_default=True, help="onnx (onnxruntime; `buildings predict --checkpoint x.onnx` runs it), "
              "saved_model (TensorFlow; needs KERAS_BACKEND=tensorflow) or torch (torch.export .pt2).")
@click.option("--out", type=click.Path(), default=None,
              help="Where to write [default: beside the checkpoint, named after it: .onnx, .pt2, or a "
                   "_saved_model folder].")
def export_command(checkpoint, fmt, out):
    """Export a checkpoint for deployment without Keras: float32 NHWC images normalised with the
    ImageNet mean/std in, logits out; batch, height and width dynamic (multiples of 32)."""
    from buildings.export import FORMATS, export_checkpoint

    if out is None:
        source = Path(checkpoint)
        out = source.with_name(source.stem + (FORMATS[fmt] or "_saved_model"))
    path = export_checkpoint(checkpoint, out, fmt)
    click.echo(f"wrote {path} ({fmt})")


@main.command("serve")
@click.option("--checkpoint", "checkpoints", required=True, multiple=True,
              type=click.Path(exists=True, dir_okay=False), help="A .keras or exported .onnx checkpoint; repeat "
                                                                 "for an ensemble.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--tta", type=click.Choice(["none", "flip", "d4"]), default="none", show_default=True,
              help="Test-time augmentation (mean of probabilities); flip and d4 cost 3x and 8x the time.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Building threshold [default: the tuned one from postprocess.json beside the checkpoint, else 0.5].")
@click.option("--max-upload-mb", type=click.FloatRange(0.01), default=50.0, show_default=True,
              help="Largest upload accepted (413 beyond).")
def serve_command(checkpoints, host, port, tta, threshold, max_upload_mb):
    """Serve a checkpoint: an HTTP API (POST /predict an image or GeoTIFF: mask PNG, RLE or GeoJSON
    polygons; GET /health) and a web page at / to try it (upload, overlay, threshold, download)."""
    from buildings.inference import choice_path, load_choice
    from buildings.serve import serve

    post = None
    tuned = choice_path(checkpoints[0])
    if tuned.is_file():
        choice = load_choice(tuned)
        post = choice.postprocess
        threshold = choice.threshold if threshold is None else threshold
        click.echo(f"post-processing: {choice.describe()} (from {tuned})", err=True)
    click.echo(f"serving {', '.join(checkpoints)} on http://{host}:{port}/", err=True)
    serve(list(checkpoints), host=host, port=port, threshold=0.5 if threshold is None else threshold,
          postprocess=post, tta=tta, max_upload_mb=max_upload_mb)


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="buildings-demo", show_default=True,
              help="Folder for everything the demo writes (its previous run there is replaced).")
@click.option("--epochs", type=click.IntRange(1), default=12, show_default=True, help="Training epochs.")
@click.option("--minutes", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Stop training after the epoch that crosses this time budget.")
@click.option("--n", type=click.IntRange(16), default=64, show_default=True, help="Synthetic tiles.")
@click.option("--seed", default=0, show_default=True, help="Seed of the data, weights and augmentation.")
def demo_command(out, epochs, minutes, n, seed):
    """Synthesise contest data, build the dataset, train a small model, predict the test split,
    write the submission and an overlay PNG, and print the score."""
    from buildings.demo import run_demo

    click.echo(f"backend {_device()}")
    result = run_demo(out, epochs=epochs, minutes=minutes, n=n, seed=seed, say=click.echo)
    score = result["score"]
    click.echo(f"submission {result['submission']}  overlay {result['overlay']}  run {result['run_dir']}")
    click.echo(f"contest score (mean image Dice) {score.dice:.4f} on {score.n_images} synthetic test tiles "
               f"(IoU {score.iou:.4f}; Dice on tiles with buildings {score.dice_with_buildings:.4f}; "
               f"empty tiles predicted empty {score.empty_predicted_empty}/{score.n_truth_empty})")


@main.command("bench")
@click.option("--model", type=click.Choice(["unet", "attunet", "deeplabv3plus", "fcn"]), default="unet",
              show_default=True, help="Architecture.")
@click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE",
              help="Extra model option, e.g. filters=32 (repeatable).")
@click.option("--image-size", type=click.IntRange(32), default=256, show_default=True,
              help="Side of the square input images.")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Images per step.")
@click.option("--steps", type=click.IntRange(2), default=10, show_default=True, help="Timed steps.")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Mixed-precision policy of the model.")
@click.option("--backends", default=None,
              help="Comma-separated (default: every installed one); torch-plain = torch without the "
                   "package's torch speed-ups (Keras as released).")
@click.option("--jit-compile", type=click.Choice(["auto", "true", "false"]), default="auto", show_default=True,
              help="Keras compile(jit_compile=...): XLA on jax/tensorflow, torch.compile on torch.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON lines.")
def bench_command(model, model_option, image_size, batch_size, steps, precision, backends, jit_compile, as_json):
    """The same training steps and inference under torch, jax and tensorflow (fresh subprocesses,
    same initial weights, same batches): throughput, step-time percentiles, first-step (compile)
    time, peak memory, and the loss after N steps."""
    from buildings.benchmark import run_bench
    from buildings.config import parse_model_options

    jit = {"auto": "auto", "true": True, "false": False}[jit_compile]
    rows = run_bench(model, image_size=image_size, batch_size=batch_size, steps=steps, precision=precision,
                     model_options=parse_model_options(model_option),
                     backends=backends.split(",") if backends else None, jit_compile=jit)
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{model} {image_size}x{image_size}, batch {batch_size}, {steps} steps, {precision}, "
               f"jit_compile={jit_compile}")
    click.echo("| backend | device | train img/s | infer img/s | step p50 s | step p90 s | first step s | "
               "peak MB | loss step 1 | loss step N |")
    click.echo("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        click.echo(f"| {r['backend']} | {r['device']} | {r['train_images_per_s']:.2f} | {r['infer_images_per_s']:.2f} "
                   f"| {r['step_p50_s']:.3f} | {r['step_p90_s']:.3f} | {r['first_step_s']:.2f} | "
                   f"{r['peak_memory_mb']:.0f} ({r['memory_kind']}) | {r['loss_first']:.5f} | {r['loss_last']:.5f} |")


def _device(models=()) -> str:
    if models and all(hasattr(m, "session") for m in models):  # exported models: onnxruntime, no Keras
        return f"onnxruntime on {models[0].session.get_providers()[0]}"
    import keras

    from buildings.runtime.device import describe_device

    return f"{keras.backend.backend()} on {describe_device()}"


if __name__ == "__main__":  # pragma: no cover
    main()
