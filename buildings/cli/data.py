"""``buildings data ...``: build, import, inspect and synthesise datasets. The two kinds of dataset
have one name each, everywhere: ``tianchi_buildings`` (the binary contest layout) and
``land_parcels`` (the multi-class folder layout)."""

from __future__ import annotations

import json
import math

import click

from buildings.cli.options import bar, data_options
from buildings.data.tfds import DATASETS
from buildings.formats.rle import CONTEST_SHAPE

DATASET_HELP = ("tianchi_buildings: the Tianchi layout (train.zip + RLE CSVs, 512x512 binary tiles); "
                "land_parcels: the multi-class folder layout (img_train/ + lab_train/ + img_testA/).")


@click.group()
def data():
    """Build, inspect and synthesise datasets."""


@data.command("build")
@click.option("--manual-dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="Folder with the contest files (zips or extracted).")
@click.option("--dataset", default="tianchi_buildings", show_default=True, type=click.Choice(DATASETS),
              help=DATASET_HELP)
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
    from buildings.data.tfds import build

    built = build(dataset, manual_dir, data_dir, config=config, num_classes=num_classes,
                  validation_percent=validation_percent, overwrite=overwrite)
    click.echo(f"already built: {built.path} (kept as it is; --overwrite rebuilds it)" if built.kept
               else f"built {built.path}")
    click.echo(f"splits: {built.describe_splits()}")
    click.echo(built.validation_rule)


@data.command("import-labelme")
@click.argument("source", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder to write into: img_train/, lab_train/ and classes.txt (land_parcels), or train/ and "
                   "train_mask.csv (tianchi_buildings); then: buildings data build --dataset ... --manual-dir OUT.")
@click.option("--labels", required=True, metavar="NAME[,NAME...]",
              help="The polygon labels, in class order: they become classes 1..N (0 is background; "
                   "__ignore__ polygons become 255, unlabelled).")
@click.option("--dataset", type=click.Choice(DATASETS), default="land_parcels", show_default=True,
              help="The dataset it becomes: land_parcels (the multi-class folders) or tianchi_buildings (the "
                   f"contest's own layout, for one label and {CONTEST_SHAPE[0]}x{CONTEST_SHAPE[1]} images).")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --out.")
@click.option("--allow-outside", is_flag=True,
              help="Read images that an imagePath names outside SOURCE (refused by default).")
def data_import_labelme(source, out, labels, dataset, overwrite, allow_outside):
    """Turn a labelme project (image + .json per image, polygons or rectangles) into the files a
    dataset is built from. Unknown labels and points outside the image are refused, naming the file
    and the shape; nothing is written unless every file converts."""
    from buildings.formats.labelme import import_labelme

    counts = import_labelme(source, out, labels.split(","), dataset=dataset, overwrite=overwrite,
                            allow_outside=allow_outside)
    total = max(sum(counts["pixels"]), 1)
    shares = ", ".join(f"{name} {100 * n / total:.1f}%" for name, n in zip(counts["classes"], counts["pixels"],
                                                                          strict=True))
    masks = "train_mask.csv" if dataset == "tianchi_buildings" else "label PNGs"
    click.echo(f"wrote {counts['images']} images and {masks} to {out} ({shares}); next: buildings data build "
               f"--dataset {dataset} --manual-dir {out}")


@data.command("stats")
@data_options
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as one JSON object.")
def data_stats(data_, data_dir, as_json):
    """Counts, building-pixel fraction, empty tiles and per-channel mean/std of each split."""
    from buildings.data.splits import open_split
    from buildings.data.stats import dataset_stats

    total = sum(len(open_split(data_, s, data_dir)) for s in ("train", "validation", "test"))
    with bar(total, "reading") as progress:
        stats = dataset_stats(data_, data_dir=data_dir, progress=progress.update)
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
@data_options
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
@click.option("--dataset", default="tianchi_buildings", show_default=True, type=click.Choice(DATASETS),
              help="tianchi_buildings: 512x512 binary tiles as the Tianchi download; land_parcels: 256x256 "
                   "multi-class tiles as img_train/ lab_train/ img_testA/ (+ lab_testA/ truth).")
@click.option("--num-classes", default=4, show_default=True, type=click.Choice(["2", "4", "7"]),
              help="land_parcels: number of classes.")
def data_synth(out, n, seed, dataset, num_classes):
    """Write synthetic tiles in a dataset's exact download layout, with the test truth for local scoring."""
    from buildings.data.synth import write_synthetic_contest, write_synthetic_parcels

    if dataset == "land_parcels":
        paths = write_synthetic_parcels(out, n, num_classes=int(num_classes), seed=seed)
    else:
        paths = write_synthetic_contest(out, n, seed=seed)
    click.echo(f"wrote {', '.join(p.name for p in paths.values())} to {out}")


COMMANDS = [data]
