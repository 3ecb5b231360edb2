import json

from click.testing import CliRunner

import buildings
from buildings.cli import main


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(main, ["--version"])
    assert result.exit_code == 0 and buildings.__version__ in result.output
    result = runner.invoke(main, ["--help"])
    assert result.exit_code == 0 and "score" in result.output


def test_score_prints_contest_score(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("a.jpg\t1 4\nb.jpg\t\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("a.jpg\t1 2\nb.jpg\t\n")
    result = CliRunner().invoke(main, ["score", str(pred), str(truth), "--shape", "4x4", "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert scores["dice"] == (2 * 2 / 6 + 1) / 2
    result = CliRunner().invoke(main, ["score", str(pred), str(truth), "--shape", "4"])
    assert "contest score (mean image Dice) 0.833333" in result.output


def test_score_errors_are_one_clean_message(tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("a.jpg\t1 4\n")
    pred = tmp_path / "pred.csv"
    pred.write_text("a.jpg\t1 x\n")
    result = CliRunner().invoke(main, ["score", str(pred), str(truth), "--shape", "4x4"])
    assert result.exit_code == 1
    assert f"{pred}:1: a.jpg: RLE token 2 ('x')" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["score", str(pred), str(truth), "--shape", "4y4"])
    assert result.exit_code == 2 and "HEIGHTxWIDTH" in result.output


def test_import_defaults_backend_to_torch(tmp_path):
    import os
    import subprocess
    import sys

    from helpers import ROOT

    script = [sys.executable, str(ROOT / "tests" / "scripts" / "keras_backend.py")]
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    out = subprocess.run(script, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["torch", "torch"]
    env["KERAS_BACKEND"] = "jax"
    out = subprocess.run(script, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["jax", "jax"]


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(tmp_path, monkeypatch):
    import buildings.formats.submission as submission

    truth = tmp_path / "truth.csv"
    truth.write_text("a.jpg\t1 4\n")
    result = CliRunner().invoke(main, ["score", str(truth), str(tmp_path / "missing.csv")])
    assert result.exit_code == 2  # click's own check of the path

    def broken(*args, **kwargs):
        raise ValueError("a bug, not a user error")

    monkeypatch.setattr(submission, "score_submission", broken)
    result = CliRunner().invoke(main, ["score", str(truth), str(truth)])
    assert isinstance(result.exception, ValueError) and "Error:" not in result.output
