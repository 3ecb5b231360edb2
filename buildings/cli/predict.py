"""``buildings predict``, ``evaluate``, ``tune`` and ``tune-threshold``: checkpoints on images,
GeoTIFFs and labelled splits, through one predictor and one probability → mask rule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from buildings.cli.options import bar, data_options, open_predictor, predictor_options, rule_options, say


@click.command("predict")
@predictor_options
@rule_options
@data_options
@click.option("--split", default="test", show_default=True,
              help="Split of --data to predict when --images is not given (validation: to score it yourself).")
@click.option("--images", type=click.Path(), default=None,
              help="Predict these instead of a split of --data: an image, a folder or a zip.")
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
                   "with area_m2 (m² on the ground, projected or geographic CRS), pixels and mean probability; "
                   "--min-area drops small ones.")
@click.option("--simplify", type=click.FloatRange(0), default=1.0, show_default=True,
              help="--vectorize: outline simplification tolerance, in pixels (0 keeps the pixel staircase).")
@click.option("--block", type=click.IntRange(64), default=2048, show_default=True,
              help="GeoTIFF input: the side of the blocks it is streamed through (each read with --overlap of "
                   "halo); memory follows it.")
@click.pass_context
def predict_command(ctx, **options):
    """Predict masks and write the contest submission: the Tianchi RLE file (test split in
    sample-submit order) for binary models, a result.zip of label PNGs for multi-class ones.

    A GeoTIFF given to --images (one .tif file with a CRS) is streamed through in blocks whatever its
    size: --save-masks writes a georeferenced GeoTIFF mask there, --vectorize building polygons."""
    from buildings.geo.raster import is_georeferenced

    images = options["images"]
    if images and is_georeferenced(images):
        _predict_geotiff(ctx, options)
        return
    if options["bands"] or options["vectorize"]:
        raise click.UsageError("--bands and --vectorize are for a GeoTIFF given to --images (a .tif with a CRS)")
    if not (options["out"] or options["save_masks"] or options["save_overlays"]):
        raise click.UsageError("nothing to write: give --out, --save-masks or --save-overlays")
    from buildings.data.splits import open_split, split_items
    from buildings.formats.images import open_images
    from buildings.inference import write_predictions

    predictor = open_predictor(ctx, **options)
    data_task = None
    inputs = []
    if images:
        archive = open_images(images)
        items, inputs = list(archive.items()), archive.files()
    else:
        source = open_split(options["data_"], options["split"], options["data_dir"])
        items, data_task = list(split_items(source)), source.task
    with bar(len(items), "predicting") as progress:
        report = write_predictions(predictor, items, options["out"], save_masks=options["save_masks"],
                                   save_overlays=options["save_overlays"], output_format=options["output_format"],
                                   data_task=data_task, inputs=inputs, progress=progress.update)
    click.echo(report.describe() + (f"; wrote {options['out']}" if options["out"] else ""))


def _predict_geotiff(ctx, options) -> None:
    from buildings.geo.predict import block_count, check_raster_outputs, predict_raster
    from buildings.geo.raster import parse_bands

    if options["out"] or options["save_overlays"]:
        raise click.UsageError("a GeoTIFF predicts into --save-masks (a GeoTIFF mask) and --vectorize; "
                               "--out and --save-overlays are for image tiles")
    if not (options["save_masks"] or options["vectorize"]):
        raise click.UsageError("nothing to write: give --save-masks or --vectorize")
    image, save_masks, vectorize = options["images"], options["save_masks"], options["vectorize"]
    bands = parse_bands(options["bands"])
    mask_out = Path(save_masks) / (Path(image).stem + ".tif") if save_masks else None
    check_raster_outputs(image, mask_out=mask_out, vectorize_out=vectorize)  # before a model is loaded
    predictor = open_predictor(ctx, **options)
    with bar(block_count(image, options["block"]), "predicting", unit="blocks") as progress:
        report = predict_raster(predictor, image, bands=bands, mask_out=mask_out, vectorize_out=vectorize,
                                simplify=options["simplify"], block=options["block"], progress=progress.update,
                                log=say)
    wrote = [str(p) for p in (mask_out, vectorize) if p]
    click.echo(report.describe() + f"; wrote {', '.join(wrote)}")


@click.command("evaluate")
@predictor_options
@rule_options
@data_options
@click.option("--split", default="validation", show_default=True, help="Labelled split to score.")
@click.option("--gallery", type=click.Path(dir_okay=False), default=None,
              help="Also write a PNG figure of the 8 worst images (truth vs prediction, with scores).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object.")
@click.pass_context
def evaluate_command(ctx, **options):
    """Scores of checkpoint(s) on a labelled split: contest Dice, IoU, precision and recall for
    binary models; per-class IoU, mIoU, FWIoU and pixel accuracy for every model."""
    from buildings.data.splits import open_split
    from buildings.inference import evaluate

    predictor = open_predictor(ctx, **options)
    source = open_split(options["data_"], options["split"], options["data_dir"])
    with bar(len(source), "evaluating") as progress:
        result = evaluate(predictor, source, gallery=options["gallery"], progress=progress.update)
    if options["as_json"]:
        click.echo(json.dumps(result.as_dict()))
        return
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
    if options["gallery"]:
        click.echo(f"wrote {options['gallery']}")


@click.command("tune-threshold")
@predictor_options
@rule_options(threshold=False, tuned=False)
@data_options
@click.option("--split", default="validation", show_default=True,
              help="Labelled split to tune on (never the test split).")
@click.pass_context
def tune_threshold_command(ctx, **options):
    """The probability threshold that maximises contest Dice on a labelled split (0.10..0.90), with
    --min-area and --fill-holes applied at each."""
    from buildings.data.splits import open_split
    from buildings.inference import DEFAULT_THRESHOLDS, evaluate

    predictor = open_predictor(ctx, **options, announce_rule=False)
    source = open_split(options["data_"], options["split"], options["data_dir"])
    with bar(len(source), "evaluating") as progress:
        result = evaluate(predictor, source, thresholds=DEFAULT_THRESHOLDS, progress=progress.update)
    sweep, best = result.threshold_dice, result.best_threshold
    for t, dice in sweep.items():
        click.echo(f"threshold {t:.2f}  contest Dice {dice:.4f}" + ("  <- best" if t == best else ""))
    click.echo(f"best threshold {best:.2f} (contest Dice {sweep[best]:.4f}); use --threshold {best:.2f}")


@click.command("tune")
@predictor_options
@data_options
@click.option("--split", default="validation", show_default=True,
              help="Labelled split to tune on (the test split is refused).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to write the choice [default: postprocess.json beside the first checkpoint, which "
                   "predict, evaluate and serve then apply].")
@click.pass_context
def tune_command(ctx, **options):
    """Tune the threshold, min-area, hole filling and the empty-image gates jointly for the contest
    Dice on the validation split; write them where `buildings predict` applies them by default."""
    from buildings.data.splits import open_split
    from buildings.files import refuse_overwrites
    from buildings.inference import choice_path, save_choice, tune_postprocess

    split, checkpoints = options["split"], options["checkpoints"]
    if split == "test":
        raise click.BadParameter("tuning on the test split would score the test on what was tuned on it",
                                 param_hint="--split")
    out = options["out"] or choice_path(checkpoints[0])
    refuse_overwrites(checkpoints, [("--out", out)])
    predictor = open_predictor(ctx, **options, announce_rule=False)
    source = open_split(options["data_"], split, options["data_dir"])
    with bar(len(source), "predicting") as progress:
        choice = tune_postprocess(predictor, source, checkpoints=checkpoints, progress=progress.update)
    for label, dice in choice.steps:
        click.echo(f"{label:<40} contest Dice {dice:.4f}")
    path = save_choice(choice, out)
    click.echo(f"chosen: {choice.describe()}: contest Dice {choice.score:.4f} on {split} "
               f"(baseline {choice.baseline:.4f}); wrote {path}")


COMMANDS = [predict_command, evaluate_command, tune_threshold_command, tune_command]
