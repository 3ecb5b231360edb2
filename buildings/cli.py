"""The ``buildings`` command line: thin wrappers that parse options, call one library function
and print. Every command here works end to end; there are no placeholders."""

from __future__ import annotations

import json
import math

import click

import buildings
from buildings.submission import SubmissionError, score_submission


def parse_shape(value: str) -> tuple[int, int]:
    """``512`` or ``512x512`` (height x width) → (512, 512)."""
    parts = value.lower().replace("*", "x").split("x")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH such as 512x512") from None
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or min(numbers) < 1:
        raise click.BadParameter(f"{value!r}: expected HEIGHTxWIDTH such as 512x512")
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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(buildings.__version__, prog_name="buildings")
def main():
    """Aerial images to building masks: Tianchi-style RLE submissions and scoring."""


@main.command()
@click.argument("submission", type=click.Path(exists=True, dir_okay=False))
@click.argument("truth", type=click.Path(exists=True, dir_okay=False))
@click.option("--shape", type=ShapeType(), default="512x512", show_default=True,
              help="Image shape the RLE refers to (HEIGHTxWIDTH).")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as one JSON object.")
def score(submission, truth, shape, as_json):
    """Score SUBMISSION against TRUTH (both name<TAB>rle files, .csv or .zip) with the contest metric:
    the mean over images of per-image Dice, 1 when both masks are empty."""
    try:
        result = score_submission(submission, truth, shape=shape)
    except SubmissionError as err:
        raise click.ClickException(str(err)) from None
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


if __name__ == "__main__":  # pragma: no cover
    main()
