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
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface). Beyond loopback a bearer token is required "
                   "(--token), or --no-auth.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option("--max-upload-mb", type=click.FloatRange(0.01), default=50.0, show_default=True,
              help="Largest upload accepted, counted while it is received (413 beyond).")
@click.option("--max-pixels", type=click.IntRange(1), default=8192 * 8192, show_default=True,
              help="Pixel budget of an image (width x height), read from its header before decoding (413 beyond).")
@click.option("--queue", type=click.IntRange(0), default=8, show_default=True,
              help="Uploads admitted besides the one being predicted (being received or waiting); one more "
                   "is answered 503 at once, with Retry-After.")
@click.option("--token", envvar="BUILDINGS_SERVE_TOKEN", default=None,
              help="Bearer token every request but the page must send (Authorization: Bearer TOKEN; the page: "
                   "open /#token=TOKEN) [default: $BUILDINGS_SERVE_TOKEN].")
@click.option("--no-auth", is_flag=True, help="Serve beyond loopback without a token (anyone who can reach it can "
                                              "use it).")
@click.option("--allow-host", "allow_hosts", multiple=True, metavar="NAME[:PORT]",
              help="A Host name clients may use besides 127.0.0.1, localhost and [::1] (repeatable; * for any: "
                   "turns the DNS-rebinding check off).")
@click.option("--body-timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
              help="Seconds a request body may take to arrive (408 and the connection closed beyond).")
@click.option("--header-timeout", type=click.FloatRange(0.1), default=10.0, show_default=True,
              help="Seconds the request headers may take, from the connection opening or the last answer.")
@click.option("--max-connections", type=click.IntRange(1), default=256, show_default=True,
              help="Open connections beyond which new requests are answered 503 (uvicorn's limit_concurrency).")
@click.pass_context
def serve_command(ctx, **options):
    """Serve a checkpoint: an HTTP API (POST /predict an image or GeoTIFF: mask PNG, RLE or GeoJSON
    polygons; GET /health) and a web page at / to try it (upload, overlay, threshold, download), with
    the same rule as `buildings predict` (the tuned postprocess.json, the options given overriding it).
    The page's sample is a validation tile of the model's own dataset (named by the run's config.json
    beside the checkpoint) when it is here, else a synthetic scene, labelled as such."""
    from buildings.serve import check_exposure, check_installed, find_sample, serve, served_hosts

    check_installed()  # fastapi, uvicorn, python-multipart: before loading anything
    token = options["token"] or None
    warning = check_exposure(options["host"], token, options["no_auth"])  # before loading anything or binding
    if warning:
        say(warning)
    predictor = open_predictor(ctx, **options)
    host, port = options["host"], options["port"]
    url_host = f"[{host}]" if ":" in host else host
    say(f"serving {', '.join(options['checkpoints'])} on http://{url_host}:{port}/"
        + (f" (bearer token required; the page: http://{url_host}:{port}/#token=<token>)" if token else ""))
    say(f"Host names served: {', '.join(served_hosts(host, options['allow_hosts']))} (more with --allow-host)")
    sample = find_sample(options["checkpoints"][0])
    say(f"the page's {sample.label}" + (f" ({sample.reason})" if sample.reason else ""))
    serve(predictor, host=host, port=port, max_upload_mb=options["max_upload_mb"], max_pixels=options["max_pixels"],
          queue=options["queue"], token=token, allow_hosts=options["allow_hosts"],
          body_timeout=options["body_timeout"], header_timeout=options["header_timeout"],
          max_connections=options["max_connections"], sample=sample)


COMMANDS = [export_command, serve_command]
