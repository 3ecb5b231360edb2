"""``buildings export`` and ``buildings serve``: a checkpoint for other runtimes, and behind HTTP."""

from __future__ import annotations

from pathlib import Path

import click

from buildings.cli.options import open_predictor, predictor_options, rule_options, say


@click.command("export")
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


@click.command("serve")
@predictor_options
@rule_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-upload-mb", type=click.FloatRange(0.01), default=50.0, show_default=True,
              help="Largest upload accepted (413 beyond).")
@click.pass_context
def serve_command(ctx, **options):
    """Serve a checkpoint: an HTTP API (POST /predict an image or GeoTIFF: mask PNG, RLE or GeoJSON
    polygons; GET /health) and a web page at / to try it (upload, overlay, threshold, download), with
    the same rule as `buildings predict` (the tuned postprocess.json, the options given overriding it)."""
    from buildings.serve import serve

    predictor = open_predictor(ctx, **options)
    say(f"serving {', '.join(options['checkpoints'])} on http://{options['host']}:{options['port']}/")
    serve(predictor, host=options["host"], port=options["port"], max_upload_mb=options["max_upload_mb"])


COMMANDS = [export_command, serve_command]
