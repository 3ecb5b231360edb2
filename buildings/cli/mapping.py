"""``buildings map``: many GeoTIFFs into one building layer (``buildings.mapping``)."""

from __future__ import annotations

import importlib.util

import click

from buildings.cli.options import given, predictor_options, rule_options, say
from buildings.errors import ConfigError, missing_extra


@click.command("map")
@click.argument("sources", nargs=-1, required=True)
@predictor_options
@rule_options
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder of the job: masks/, parts/, buildings.gpkg, summary.json, quicklook.png.")
@click.option("--engine", type=click.Choice(("auto", "ray", "local")), default="auto", show_default=True,
              help="ray: Ray Data, model actors in parallel (embedded, or --address); local: one file after "
                   "another in this process; auto: ray when installed.")
@click.option("--address", default=None, help="Join this Ray cluster (e.g. ray://head:10001 or auto) instead of "
                                              "starting an embedded one.")
@click.option("--actors", type=click.IntRange(1), default=None,
              help="Model actors [default: one per GPU of the cluster, else one per 2 CPUs].")
@click.option("--crs", default=None, help="CRS of the merged layer, e.g. EPSG:3857 [default: the first input's].")
@click.option("--block", type=click.IntRange(64), default=2048, show_default=True,
              help="Raster block side (as predict --images): a window of the job, read with --overlap of halo.")
@click.option("--bands", default=None, metavar="R,G,B", help="The 1-based bands to read (as predict --images).")
@click.option("--simplify", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Per-file outlines: simplification tolerance in pixels (as predict --simplify).")
@click.option("--simplify-m", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Merged layer: simplification tolerance in metres.")
@click.option("--min-area-m2", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Merged layer: drop buildings smaller than this on the ground.")
@click.option("--regularize", is_flag=True, help="Merged layer: square the footprints' corners.")
@click.option("--save-probabilities", is_flag=True, help="Also write probabilities/<name>.tif (x255, uint8 COG).")
@click.option("--resume", is_flag=True, help="Continue the job in --out (rerunning the same command does too): "
                                             "files it committed are skipped.")
@click.pass_context
def map_command(ctx, sources, out_dir, engine, address, actors, crs, block, bands, simplify, simplify_m, min_area_m2,
                regularize, save_probabilities, resume, **options):
    """Map SOURCES (GeoTIFFs: folders, globs, a text file of paths, a STAC ItemCollection JSON) into
    per-file COG masks and one building layer: buildings across window seams and file edges are
    one feature each, with area_m2, mean probability and source."""
    from pathlib import Path

    from buildings.geo.raster import parse_bands
    from buildings.inference import resolve_rule
    from buildings.inference.backends import check_checkpoint_file
    from buildings.mapping import MapOptions, PredictorSpec, check_installed, run_map

    check_installed()  # rasterio, shapely, pyogrio: before any checkpoint or raster is read
    for checkpoint in options["checkpoints"]:
        check_checkpoint_file(checkpoint)
    ray_installed = importlib.util.find_spec("ray") is not None
    if engine == "ray" and not ray_installed:
        raise ConfigError(missing_extra("--engine ray", "ray", "map") + " (or --engine local)")
    if engine == "auto":
        engine = "ray" if ray_installed else "local"
        if not ray_installed:
            say("Ray is not installed: the files go one after another in this process "
                "(pip install -e \".[map]\" for the parallel engine)")
    rule_given = given(ctx, *(n for n in ("threshold", "min_area", "fill_holes") if n in ctx.params))
    rule, source = resolve_rule(options["checkpoints"][0], options["postprocess_from"], **rule_given)
    say(f"post-processing: {rule.describe()} (from {source})")
    spec = PredictorSpec(tuple(options["checkpoints"]), {k: options[k] for k in ("tta", "weights", "vote", "tile",
                                                                                 "overlap", "batch_size")}, rule)
    map_options = MapOptions(Path(out_dir), crs=crs, block=block, bands=parse_bands(bands), simplify=simplify,
                             simplify_m=simplify_m, min_area_m2=min_area_m2, regularize=regularize,
                             save_probabilities=save_probabilities)
    result = run_map(sources, spec, map_options, engine=engine, address=address, actors=actors, resume=resume,
                     say=say)
    click.echo(f"wrote {result.out / 'buildings.gpkg'} ({result.summary['buildings']} buildings), "
               f"{result.out / 'summary.json'}")
    if result.failed:
        raise click.ClickException(f"{len(result.failed)} input(s) failed: "
                                   + "; ".join(f"{Path(p).name}: {r}" for p, r in result.failed.items())[:300])


COMMANDS = [map_command]
