"""Defaults that follow the machine (``buildings.recipes``): what a ``fit`` call does not give comes
from the machine's recipe, only what fits the architecture, the user's options always win, and the
fill is said in one line and recorded in config.json."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from buildings.cli import main
from buildings.config import FitConfig, make_fit_config
from buildings.errors import ConfigError
from buildings.recipes import DEVICE_RECIPES, RECIPES, describe_filled, load_recipe, recipe_file

CPU = load_recipe(DEVICE_RECIPES[False])
GPU = load_recipe(DEVICE_RECIPES[True])


@pytest.mark.parametrize("model", ["attunet", "unet", "deeplabv3plus", "fcn"])
def test_no_gpu_fills_the_cpu_recipe_with_its_pretrained_encoder(model):
    config = make_fit_config(flags={"model": model}, accelerator=False)
    assert config.model == model, "the model given stays"
    for key in ("image_size", "max_minutes", "lr", "freeze_encoder_epochs"):
        assert getattr(config, key) == CPU[key] != getattr(FitConfig(), key), key
    assert (config.batch_size, config.epochs) == (CPU["batch_size"], CPU["epochs"])
    assert (config.encoder, config.encoder_weights) == (CPU["encoder"], "imagenet")
    assert config.device_defaults["recipe"] == "cpu-quick" and config.device_defaults["accelerator"] is False
    assert config.device_defaults["filled"]["image_size"] == CPU["image_size"]
    config.check()  # every architecture takes the recipe's encoder (DeepLabV3+ and FCN dilate it)


def test_options_given_always_win_and_the_encoders_weights_go_with_the_encoder():
    config = make_fit_config(flags={"model": "attunet", "image_size": 512, "epochs": 3}, accelerator=False)
    assert (config.image_size, config.epochs, config.batch_size) == (512, 3, CPU["batch_size"])
    assert "image_size" not in config.device_defaults["filled"]
    other = make_fit_config(flags={"model": "deeplabv3plus", "encoder": "resnet50"}, accelerator=False)
    assert other.encoder == "resnet50" and other.encoder_weights is None and other.freeze_encoder_epochs == 0, \
        "a different encoder gets neither the recipe's weights (a download) nor its freezing"
    same = make_fit_config(flags={"encoder": CPU["encoder"], "encoder_weights": "none"}, accelerator=False)
    assert same.encoder_weights == "none" and same.freeze_encoder_epochs == CPU["freeze_encoder_epochs"]
    options = make_fit_config(flags={"model": "unet"}, model_options=["decoder_attention=cbam"], accelerator=False)
    assert options.model_options == {"decoder_attention": "cbam"}


def test_a_gpu_fills_the_gpu_recipe_without_its_fold_layout():
    config = make_fit_config(flags={"model": "attunet"}, accelerator=True)
    assert (config.image_size, config.batch_size, config.precision) == (GPU["image_size"], GPU["batch_size"], "bf16")
    assert "folds" in GPU and config.folds is None and config.fold is None
    assert describe_filled(config.device_defaults).startswith("a GPU is visible: the tianchi-gpu recipe fills")


def test_a_config_file_or_a_resumed_run_keeps_its_options(tmp_path):
    full = tmp_path / "config.json"
    stored = make_fit_config(flags={"model": "unet"}, accelerator=False)
    full.write_text(json.dumps({"options": stored.__dict__}))
    again = make_fit_config(config_file=full, accelerator=True)  # a GPU now: the file still wins
    assert {k: v for k, v in again.__dict__.items() if k != "run_dir"} == \
           {k: v for k, v in stored.__dict__.items() if k != "run_dir"}
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"options": {"model": "attunet", "image_size": 128}}))
    config = make_fit_config(config_file=partial, accelerator=False)
    assert (config.image_size, config.epochs) == (128, CPU["epochs"]), "the rest follows the machine"
    assert make_fit_config(flags={"model": "unet"}).device_defaults is None, "no machine given: nothing filled"


def test_recipes_by_name_and_one_line_for_anything_else(tmp_path):
    assert recipe_file("cpu-quick") == RECIPES["cpu-quick"]
    assert make_fit_config(config_file="cpu-quick").image_size == CPU["image_size"]
    with pytest.raises(ConfigError, match=r"--config cpu-fast: no such file, and not a recipe name \(cpu-quick"):
        recipe_file("cpu-fast")
    with pytest.raises(ConfigError, match="a folder, not a JSON file"):
        recipe_file(tmp_path)


def test_fit_says_what_the_machine_filled_and_records_it(synth_dataset, tmp_path, monkeypatch):
    """The command line, on this CPU: the first lines name the recipe and every filled option as the
    flag that overrides it, and config.json records the fill. Sizes given keep the run tiny."""
    monkeypatch.setattr("buildings.runtime.device.accelerator_available", lambda: False)
    monkeypatch.delenv("BUILDINGS_MACHINE_DEFAULTS")
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "fit", "--data", str(synth_dataset), "--run-dir", str(run), "--model", "unet", "--encoder", "none",
        "--model-option", "filters=4", "--model-option", "depth=1", "--image-size", "64", "--batch-size", "2",
        "--epochs", "1", "--steps-per-epoch", "1", "--aug", "light", "--workers", "1"])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("no GPU:"))
    assert "the cpu-quick recipe fills the options not given" in line and "--max-minutes 20" in line
    assert "--image-size" not in line and "--encoder-weights" not in line, "given (or not fitting) options stay out"
    options = json.loads((run / "config.json").read_text())["options"]
    assert options["device_defaults"]["filled"]["max_minutes"] == CPU["max_minutes"]
    assert options["max_minutes"] == CPU["max_minutes"] and options["image_size"] == 64


def test_no_machine_defaults_leaves_the_built_in_defaults(synth_dataset, tmp_path, monkeypatch):
    """--no-machine-defaults (and BUILDINGS_MACHINE_DEFAULTS=0, which the suite sets) fills nothing:
    no line, no record, FitConfig's own encoder and cap."""
    monkeypatch.setattr("buildings.runtime.device.accelerator_available", lambda: False)
    monkeypatch.delenv("BUILDINGS_MACHINE_DEFAULTS")
    args = ["fit", "--data", str(synth_dataset), "--model", "unet", "--model-option", "filters=4",
            "--model-option", "depth=1", "--image-size", "64", "--batch-size", "2", "--epochs", "1",
            "--steps-per-epoch", "1", "--aug", "light", "--workers", "1"]
    for extra, env in ((["--no-machine-defaults"], None), ([], "0")):
        if env is not None:
            monkeypatch.setenv("BUILDINGS_MACHINE_DEFAULTS", env)
        run = tmp_path / f"run-{env}"
        result = CliRunner().invoke(main, [*args, *extra, "--run-dir", str(run)])
        assert result.exit_code == 0, result.output
        assert "recipe fills" not in result.output
        options = json.loads((run / "config.json").read_text())["options"]
        assert options["device_defaults"] is None
        assert (options["encoder"], options["max_minutes"]) == (FitConfig.encoder, FitConfig.max_minutes)
