"""experiments/gpu_run.sh, the one-command GPU measurement, run end to end on the CPU with tiny
settings (SMOKE=1) on synthetic contest data, so that the script cannot rot between GPU sessions."""

import os
import re
import subprocess

import pytest
from helpers import ROOT


@pytest.mark.slow
def test_gpu_run_script_smoke(synth_contest, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "SMOKE": "1", "OUT": str(out), "WORK": str(tmp_path / "work"), "BARNARP": str(synth_contest), "KERAS_BACKEND": "torch"}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "gpu_run.sh")], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1500)
    report = out / "gpu_run.md"
    assert done.returncode == 0, done.stderr[-4000:] + (report.read_text()[-2000:] if report.exists() else "")
    text = report.read_text()
    for heading in ("Dataset", "Training at 64²", "buildings bench", "Plain PyTorch reference", "Inference through",
                    "Peak memory", "Is training input-bound", "Several GPUs"):
        assert f"## {heading}" in text, heading
    # the multigpu stage (a default one) ran its 1- and 2-process gloo rows under SMOKE
    assert re.search(r"^\| 1 \| \d+ \| [\d.]+ \| 1\.00 \|", text, re.M), text[-2000:]
    assert re.search(r"^\| 2 \| \d+ \| [\d.]+ \| [\d.]+ \|", text, re.M), text[-2000:]
    assert "| attunet | 1 |" in text and "| deeplabv3plus | 1 |" in text  # both trained and scored on test_a
    assert re.search(r"\| torch \| (cpu|cuda)", text) and re.search(r"\| torch-plain \| (cpu|cuda)", text)
    assert "MFU" in text
    assert "native PyTorch, channels_last, eager" in text
    assert "waiting for data" in text and "ratio after" in text
    assert "Total wall time" in text and "FAILED" not in text
    assert (out / "logs.tgz").is_file()


def test_the_multigpu_stage_is_a_default_stage_under_the_training_guides_heading():
    """The script's data-parallel stage runs by default, and its report section carries the name of
    the training guide's section on it ("Several GPUs"), so that a reader finds one from the other."""
    script = (ROOT / "experiments" / "gpu_run.sh").read_text()
    guide = (ROOT / "docs" / "guide" / "training.md").read_text()
    defaults = re.search(r"^STAGES=\$\{STAGES:-([^}]*)\}", script, re.M)
    assert defaults and "multigpu" in defaults.group(1).split(), "multigpu is not a default stage"
    assert "if has_stage multigpu; then" in script
    assert re.search(r'^section "Several GPUs\b', script, re.M)
    assert re.search(r"^## Several GPUs\b", guide, re.M)
