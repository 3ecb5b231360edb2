"""``buildings score``, ``buildings score-polygons`` and ``buildings check-result``: submissions and
building polygons against truth, results against contest rules."""

from __future__ import annotations

import json
import math

import click

from buildings.cli.options import ShapeType
from buildings.formats.rle import CONTEST_SHAPE

_CONTEST = f"{CONTEST_SHAPE[0]}x{CONTEST_SHAPE[1]}"


@click.command()
@click.argument("submission", type=click.Path(exists=True))
@click.argument("truth", type=click.Path(exists=True))
@click.option("--shape", type=ShapeType(), default=_CONTEST, show_default=True,
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


@click.command("check-result")
@click.argument("result", type=click.Path(exists=True, dir_okay=False))
@click.option("--images", required=True, type=click.Path(exists=True),
              help="The test images (folder or zip, e.g. img_testA/) the result answers.")
@click.option("--num-classes", type=click.IntRange(2, 255), default=4, show_default=True,
              help="Classes the label maps may hold (values 0..N-1, 255 = unlabelled).")
def check_result(result, images, num_classes):
    """Check a result.zip against the 地块分割 contest rules: one PNG per test image, named like it
    (.png), at the zip root, single-channel 8-bit, the image's size, values 0..N-1."""
    from buildings.formats.images import iter_images
    from buildings.formats.label_maps import check_result_zip

    shapes = {name: load().shape[:2] for name, load in iter_images(images)}
    checked = check_result_zip(result, shapes, num_classes)
    total = max(sum(checked.class_pixels), 1)
    shares = " ".join(f"{100 * c / total:.1f}" for c in checked.class_pixels)
    click.echo(f"{result}: OK, {checked.n_files} PNGs for {len(shapes)} test images; class shares % {shares}")


@click.command("score-polygons")
@click.argument("pred", type=click.Path(exists=True, dir_okay=False))
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option("--iou", "iou", type=click.FloatRange(0, 1, min_open=True), default=0.5, show_default=True,
              help="IoU a predicted and a truth building need to match.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object.")
def score_polygons(pred, truth, iou, as_json):
    """Score building polygons PRED against TRUTH, building by building.

    Each is a vector file (.gpkg, .geojson, .shp, .fgb, .parquet) or a mask (GeoTIFF or PNG,
    non-zero = building, traced into one polygon per building); PRED is reprojected into TRUTH's
    CRS. Prints SpaceNet precision / recall / F1 (one-to-one matches at IoU >= --iou), the mean IoU
    and PoLiS distance (Avbelj et al. 2015, in TRUTH's units) of the matched buildings, and the
    vertices per building."""
    from buildings.geo.polygon_metrics import score_footprint_files

    result = score_footprint_files(pred, truth, iou=iou)
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return

    def number(value, digits=4):
        return "n/a" if math.isnan(value) else f"{value:.{digits}f}"

    click.echo(f"buildings             predicted {result.n_pred}, truth {result.n_truth}, "
               f"matched {result.matched} (IoU >= {result.iou_threshold:g})")
    click.echo(f"precision             {result.precision:.4f}")
    click.echo(f"recall                {result.recall:.4f}")
    click.echo(f"F1                    {result.f1:.4f}")
    click.echo(f"mean IoU, matched     {number(result.mean_iou)}")
    click.echo(f"PoLiS, matched        {number(result.polis)} {result.units}")
    click.echo(f"vertices per building predicted {number(result.vertices_pred, 1)}, "
               f"truth {number(result.vertices_truth, 1)}")


COMMANDS = [score, score_polygons, check_result]
