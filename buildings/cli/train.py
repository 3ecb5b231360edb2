"""``buildings fit``, ``buildings demo`` and ``buildings bench``: training, the whole job on
synthetic data, and the same steps under each backend."""

from __future__ import annotations

import json
import sys

import click

from buildings.cli.options import DATA_DIR_HELP, say
from buildings.config import ARCHITECTURES, AUGMENT_ON, AUGMENTATIONS, PRECISIONS, RESIZE_MODES, FitConfig
from buildings.contract import STRIDE
from buildings.task import BINARY_LOSSES, MULTICLASS_LOSSES


class Devices(click.ParamType):
    """``--devices``: a positive number or ``all``."""

    name = "N|all"

    def convert(self, value, param, ctx):
        if value is None or value == "all" or isinstance(value, int):
            return value
        if str(value).isdigit() and int(value) >= 1:
            return int(value)
        self.fail(f"expected a positive number or 'all', got {value!r}", param, ctx)


# (flag name, FitConfig field, click type, help); defaults come from FitConfig.
FIT_OPTIONS = [
    ("--model", "model", click.Choice(ARCHITECTURES), "Architecture."),
    ("--data", "data", str, "Dataset name (under --data-dir) or folder, e.g. tianchi_buildings/val10."),
    ("--data-dir", "data_dir", str, DATA_DIR_HELP),
    ("--epochs", "epochs", click.IntRange(1), "Epochs in all (both stages)."),
    ("--batch-size", "batch_size", click.IntRange(1), "Images per training batch."),
    ("--eval-batch-size", "eval_batch_size", click.IntRange(1),
     "Validation images per batch [default: as many full images as fit the memory budget]."),
    ("--image-size", "image_size", click.IntRange(STRIDE), f"Training crop / resize side (multiple of {STRIDE})."),
    ("--resize-mode", "resize_mode", click.Choice(RESIZE_MODES), "Random crops or resizing."),
    ("--lr", "lr", float, "Peak learning rate (AdamW, warmup then cosine decay per step)."),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay."),
    ("--warmup-epochs", "warmup_epochs", float, "Linear warmup length in epochs."),
    ("--clip-norm", "clip_norm", float, "Global gradient-norm clipping."),
    ("--loss", "loss", click.Choice(BINARY_LOSSES + MULTICLASS_LOSSES),
     "Loss [default: bce_dice for binary data, ce_lovasz for multi-class]."),
    ("--aug", "aug", click.Choice(AUGMENTATIONS), "Augmentation preset."),
    ("--augment-on", "augment_on", click.Choice(("auto", *AUGMENT_ON)),
     "Where augmentation runs: cpu (albumentations in the loader workers), device (batched in the "
     "training step, keras.ops), auto (device with a GPU, cpu without)."),
    ("--cutmix", "cutmix", click.FloatRange(0, 1), "Per-sample CutMix probability."),
    ("--precision", "precision", click.Choice(("auto", *PRECISIONS)), "Mixed precision."),
    ("--encoder", "encoder", str, "Encoder: efficientnet_lite0, _lite1, _lite2 (offline pretrained weights "
     "shipped in the package), a keras.applications name (resnet50, efficientnetv2b0, ...), or none."),
    ("--encoder-weights", "encoder_weights", str, "imagenet, a local weights file, or none."),
    ("--freeze-encoder-epochs", "freeze_encoder_epochs", click.IntRange(0), "Train with the encoder frozen first."),
    ("--encoder-lr-scale", "encoder_lr_scale", click.FloatRange(0, 1, min_open=True),
     "Learning rate of a pretrained encoder while it trains, as a share of --lr (the decoder gets --lr)."),
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
    ("--devices", "devices", Devices(),
     "Data-parallel training on N devices (or all): jax shards each step over the local devices "
     "(keras.distribution); torch starts one process per device (torch.distributed, as torchrun "
     "does). --batch-size is per device. [default: one device]"),
    ("--folds", "folds", click.IntRange(2),
     "k-fold: split the training images into N folds by a hash of their names (the validation split stays "
     "out, to tune and score the bag)."),
    ("--fold", "fold", click.IntRange(1), "k-fold: the fold (1..N) to validate on; train on the others."),
]


def _fit_options(function):
    """The fit flags, each defaulting to FitConfig's value; where the machine's recipe fills another
    (buildings.recipes), the help says what each machine gets."""
    from buildings.recipes import DEVICE_RECIPES, NOT_DEFAULTS, load_recipe

    defaults = FitConfig()
    machines = {accelerator: load_recipe(name) for accelerator, name in DEVICE_RECIPES.items()}
    for flag, name, kind, text in reversed(FIT_OPTIONS):
        default = getattr(defaults, name)
        shown = True
        if name not in NOT_DEFAULTS and any(recipe.get(name, default) != default for recipe in machines.values()):
            cpu, gpu = ("none" if v is None else v for v in (machines[a].get(name, default) for a in (False, True)))
            shown = f"{cpu} without a GPU, {gpu} with one"
        function = click.option(flag, name, type=kind, default=default, show_default=shown, help=text)(function)
    return function


@click.command("fit")
@_fit_options
@click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE",
              help="Extra model option, e.g. filters=32 or decoder_attention=cbam (repeatable).")
@click.option("--tensorboard", is_flag=True, help="Write TensorBoard logs (needs the tf extra).")
@click.option("--config", "config_file", metavar="RECIPE|FILE",
              help="Options from a recipe (cpu-quick, tianchi-gpu) or a JSON file of options (a run's config.json); "
                   "flags given here override it. [default: the options not given come from the recipe of this "
                   "machine: cpu-quick without a GPU, tianchi-gpu with one]")
@click.option("--machine-defaults/--no-machine-defaults", "machine_defaults", default=True,
              envvar="BUILDINGS_MACHINE_DEFAULTS", show_default=True, show_envvar=True,
              help="Fill the options not given from this machine's recipe (cpu-quick without a GPU, tianchi-gpu "
                   "with one); --no-machine-defaults leaves the built-in defaults, the same on every machine.")
@click.option("--resume", "resume_dir", type=click.Path(exists=True, file_okay=False),
              help="Continue the run in this directory from its last finished epoch.")
@click.pass_context
def fit_command(ctx, model_option, tensorboard, config_file, machine_defaults, resume_dir, **flags):
    """Train a model with model.fit on the active Keras backend (torch unless KERAS_BACKEND says
    otherwise), on the GPU when one is visible.

    The options not given (by a flag, --config or the run resumed) follow the machine: without a GPU
    the cpu-quick recipe's (256-pixel crops, a pretrained EfficientNet-Lite0 encoder where the model
    takes one, 30 epochs within 20 minutes), with one the tianchi-gpu recipe's; the first line says
    which were filled, and config.json records them."""
    import os
    import shlex

    from buildings.cli.options import given
    from buildings.recipes import describe_filled
    from buildings.runtime.device import accelerator_available
    from buildings.training import fit, make_fit_config
    from buildings.training.run_dir import RunDirectory

    flags_given = given(ctx, *flags)
    if tensorboard:
        flags_given["tensorboard"] = True
    config = make_fit_config(flags=flags_given, model_options=model_option, config_file=config_file,
                             resume_dir=resume_dir,
                             accelerator=None if resume_dir or not machine_defaults else accelerator_available())
    if "WORLD_SIZE" in os.environ and "devices" not in flags_given:
        config.devices = None  # under torchrun its process count is the run's, whatever a resumed run had
    launched = _launch_processes(config, resume_dir)
    if launched is not None:
        sys.exit(launched)
    chief = distributed_rank() == 0
    show = say if chief else (lambda line: None)
    show(f"backend {keras_device()}; model {config.model}; data {config.data}")
    if config.device_defaults and not resume_dir:
        show(describe_filled(config.device_defaults))
    if resume_dir:
        show(f"resuming {resume_dir} after epoch {RunDirectory(resume_dir).finished_epochs()} of {config.epochs}")
    result = _fit_rank(fit, config, resume=bool(resume_dir), command=shlex.join(sys.argv), show=show)
    if not chief:
        return
    best = "n/a" if result.best_score is None else f"{result.best_score:.4f} (epoch {result.best_epoch})"
    if result.stop_reason:
        say(result.stop_reason)
    last = result.initial_epoch + result.epochs_run
    done = f"epochs {result.initial_epoch + 1}..{last}" if result.epochs_run else "no epoch left to run"
    click.echo(f"run {result.run_dir}: {done} of {config.epochs} in {result.wall_seconds:.0f} s; "
               f"best validation score {best}")
    if result.best_score is not None:
        say(next_commands(result.run_dir, config))


def next_commands(run_dir, config) -> str:
    """What to run after ``fit``: tune the post-processing on the validation split, then predict the
    test split with it (the choice lands beside the checkpoint, where predict reads it)."""
    import shlex

    data = ["--data", config.data] + (["--data-dir", config.data_dir] if config.data_dir else [])
    checkpoint = ["--checkpoint", f"{run_dir}/best.keras"]
    tune = shlex.join(["buildings", "tune", *checkpoint, *data])
    predict = shlex.join(["buildings", "predict", *checkpoint, *data, "--split", "test", "--out", "submission.csv"])
    return f"next: {tune}\n  then: {predict}"


def distributed_rank() -> int:
    """This process's rank under torchrun (0 outside it)."""
    import os

    return int(os.environ.get("RANK", "0") or 0)


def _launch_processes(config, resume_dir) -> int | None:
    """``--devices N`` on torch outside torchrun: run this command in N processes (torch's elastic
    launcher, as ``torchrun --standalone`` does) and return its exit status; None to train here."""
    import os

    if config.devices in (None, 1) or "WORLD_SIZE" in os.environ:
        return None
    import keras

    if keras.backend.backend() != "torch":
        return None  # jax drives every device from this process; tensorflow refuses in fit
    from buildings.training.distributed import launch_torch
    from buildings.training.run_dir import RunDirectory

    if config.devices == "all":
        import torch

        config.devices = max(torch.cuda.device_count(), 1)
        if config.devices == 1:
            return None
    arguments = sys.argv[1:]
    run_dir = resume_dir or config.run_dir
    made = None
    if run_dir is None:  # every rank must agree on the folder: name it here
        made = RunDirectory.create(None, model=config.model)
        run_dir = str(made.path)
        arguments = [*arguments, "--run-dir", run_dir]
    say(f"starting {config.devices} processes (torch.distributed; --batch-size is per process)")
    status = launch_torch(arguments, config.devices, run_dir=run_dir, say=say)
    if status and made is not None:
        made._remove_if_empty()
    return status


def _fit_rank(fit, config, *, resume, command, show):
    """``fit`` in this process; under torchrun, a rank whose peer died exits quietly with
    ``LOST_PEER_EXIT`` (the launcher names the rank that failed)."""
    import os

    if "WORLD_SIZE" not in os.environ:
        return fit(config, resume=resume, command=command)
    import torch.distributed as dist

    from buildings.training.distributed import LOST_PEER_EXIT

    try:
        return fit(config, resume=resume, command=command)
    except (dist.DistError, RuntimeError) as err:
        if not _lost_peer(err):
            raise
        show(f"rank {distributed_rank()}: lost a peer ({str(err).splitlines()[0][:120]})")
        sys.exit(LOST_PEER_EXIT)


def _lost_peer(err: BaseException) -> bool:
    text = str(err).lower()
    return any(word in text for word in ("connection closed", "connection reset", "broken pipe", "peer",
                                         "timed out", "gloo", "nccl"))


def keras_device() -> str:
    """``torch on cpu``: the active Keras backend and its device."""
    import keras

    from buildings.runtime.device import describe_device

    return f"{keras.backend.backend()} on {describe_device()}"


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="buildings-demo", show_default=True,
              help="Folder for everything the demo writes (its previous run there is replaced).")
@click.option("--epochs", type=click.IntRange(1), default=12, show_default=True, help="Training epochs.")
@click.option("--max-minutes", "--minutes", "minutes", type=click.FloatRange(0.1), default=5.0, show_default=True,
              help="Stop training after the epoch that crosses this time budget (fit's --max-minutes).")
@click.option("--n", type=click.IntRange(16), default=64, show_default=True, help="Synthetic tiles.")
@click.option("--seed", default=0, show_default=True, help="Seed of the data, weights and augmentation.")
def demo_command(out, epochs, minutes, n, seed):
    """Synthesise contest data, build the dataset, train a small model, predict the test split,
    write the submission and an overlay PNG, and print the score."""
    from buildings.demo import run_demo

    click.echo(f"backend {keras_device()}")
    result = run_demo(out, epochs=epochs, minutes=minutes, n=n, seed=seed, say=click.echo)
    score = result["score"]
    click.echo(f"submission {result['submission']}  overlay {result['overlay']}  run {result['run_dir']}")
    click.echo(f"contest score (mean image Dice) {score.dice:.4f} on {score.n_images} synthetic test tiles "
               f"(IoU {score.iou:.4f}; Dice on tiles with buildings {score.dice_with_buildings:.4f}; "
               f"empty tiles predicted empty {score.empty_predicted_empty}/{score.n_truth_empty})")


@click.command("bench")
@click.option("--model", type=click.Choice(ARCHITECTURES), default="unet",
              show_default=True, help="Architecture.")
@click.option("--model-option", "model_option", multiple=True, metavar="KEY=VALUE",
              help="Extra model option, e.g. filters=32 (repeatable).")
@click.option("--image-size", type=click.IntRange(STRIDE), default=256, show_default=True,
              help="Side of the square input images.")
@click.option("--batch-size", type=click.IntRange(1), default=4, show_default=True, help="Images per step.")
@click.option("--steps", type=click.IntRange(2), default=10, show_default=True, help="Timed steps.")
@click.option("--precision", type=click.Choice(tuple(PRECISIONS)), default="fp32", show_default=True,
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



COMMANDS = [fit_command, demo_command, bench_command]
