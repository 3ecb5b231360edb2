"""k-fold training: folds by a hash of the image name over every labelled image; each fold's
validation is disjoint from its training images, and the folds validate on every image once."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from helpers import ROOT

from buildings.cli import main
from buildings.data.splits import fold_of, kfold_sources, open_split, record_name
from buildings.errors import ConfigError
from buildings.training import FitConfig

TINY = ["--model", "unet", "--model-option", "filters=4", "--model-option", "depth=2", "--image-size", "64",
        "--batch-size", "2", "--aug", "light", "--epochs", "1", "--steps-per-epoch", "2"]


def _names(source) -> list[str]:
    return [record_name(source[i]) for i in range(len(source))]


def test_folds_partition_the_training_images(synth_dataset):
    train, validation = open_split(synth_dataset, "train"), open_split(synth_dataset, "validation")
    training = set(_names(train))
    folds = 3
    seen = []
    for fold in range(1, folds + 1):
        fold_train, fold_val = kfold_sources(train, folds, fold)
        train_names, val_names = set(_names(fold_train)), set(_names(fold_val))
        assert not train_names & val_names, f"fold {fold}: validation images also in training"
        assert train_names | val_names == training
        assert not (train_names | val_names) & set(_names(validation)), "the validation split stays out of the folds"
        assert all(fold_of(n, folds) == fold for n in val_names)
        assert fold_val.split == f"validation (fold {fold}/{folds})"
        seen += sorted(val_names)
    assert sorted(seen) == sorted(training), "the folds together validate on every training image exactly once"
    assert _names(kfold_sources(train, folds, 2)[1]) == _names(kfold_sources(train, folds, 2)[1])  # deterministic


def test_fold_options_are_checked_before_any_data_is_read():
    for options in ({"folds": 5}, {"fold": 1}, {"folds": 5, "fold": 6}, {"folds": 1, "fold": 1}):
        with pytest.raises(ConfigError, match="--fold"):
            FitConfig(**options).check()


def test_a_fold_run_records_its_fold_and_fold_checkpoints_predict_as_an_ensemble(synth_dataset, tmp_path):
    runner = CliRunner()
    runs = []
    for fold in (1, 2):
        run = tmp_path / f"fold{fold}"
        result = runner.invoke(main, ["fit", *TINY, "--data", str(synth_dataset), "--folds", "2", "--fold", str(fold),
                                      "--run-dir", str(run)])
        assert result.exit_code == 0, result.output
        stored = json.loads((run / "config.json").read_text())
        assert (stored["options"]["folds"], stored["options"]["fold"]) == (2, fold)
        expected = kfold_sources(open_split(synth_dataset, "train"), 2, fold)
        assert (stored["train_images"], stored["validation_images"]) == (len(expected[0]), len(expected[1]))
        runs.append(run / "best.keras")
    out = tmp_path / "bag.csv"
    result = runner.invoke(main, ["predict", "--checkpoint", str(runs[0]), "--checkpoint", str(runs[1]),
                                  "--data", str(synth_dataset), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().count("\n") == len(open_split(synth_dataset, "test"))


@pytest.mark.parametrize("recipe", sorted((ROOT / "buildings" / "recipes").glob("*.json")),
                         ids=lambda p: p.stem)
def test_every_recipe_is_a_valid_fit_config(recipe):
    from buildings.config import make_fit_config

    payload = json.loads(recipe.read_text())
    assert payload["comment"].strip() and payload["after"], "a recipe says why, and what comes after training"
    config = make_fit_config(config_file=recipe)
    config.check()  # every option known and valid, model options included
    assert config.encoder_weights == "imagenet"
