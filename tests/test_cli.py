import json

import pytest

from conftest import TINY, run_cli
from privsplit.cli import build_parser, main


def test_help_teaches_every_command(capsys):
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert {"train", "info"} <= set(commands)
    for name, sub in commands.items():
        text = sub.format_help()
        assert "usage: privsplit " + name in text
        assert len(text.splitlines()) > 4
    assert "--resume" in commands["train"].format_help() and "examples:" in commands["train"].format_help()


@pytest.mark.slow
def test_train_writes_a_complete_run_folder(tmp_path, capsys):
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", *sets]) == 0
    out = capsys.readouterr().out
    assert "finished: ours on digits" in out and "chance" in out
    # The first command tells the truth about privacy too: a quick attack at 1 and 16 queries, a lower bound.
    line = next(ln for ln in out.splitlines() if "privacy (quick check, a lower bound)" in ln)
    assert "% at 1 query" in line and "% at 16 queries" in line and "chance" in line
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.jsonl", "run.json", "obfuscator.safetensors", "heads.safetensors"):
        assert (run / name).is_file(), name
    info = json.loads((run / "run.json").read_text())
    assert info["task"]["labels"]["utility"] == ["even", "odd"]
    assert 0 <= info["metrics"]["test/task/acc"] <= 1


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--set", "model.backbone=vgg"], "unknown backbone 'vgg'; valid choices: alexnet"),
        (["train", "--set", "model.split=rn18_9"], "valid choices: rn18_1, rn18_2, rn18_3, rn18_4"),
        (["train", "--set", "reduction.0.sigma=-2"], "sigma must be a finite number >= 0"),
        (["train", "--set", "reduction=[{op: replace, fraction: 2}]"], r"fraction in \[0, 1\]"),
        (["train", "--set", "data.name=imagenet"], "unknown dataset 'imagenet'"),
        (["train", "--set", "model.split=rn18_1", "--set", "reduction=[]"], "no 'noise' op"),
        (["train", "--set", "train.epochs=0"], "train.epochs must be >= 1"),
        (["train", "--resume", "/nonexistent/run"], "not a privsplit run folder"),
        (["info", "--set", "method=magic"], None),
    ],
)
@pytest.mark.slow
def test_bad_input_gives_one_clear_line(tmp_path, args, message):
    out = run_cli(*args, cwd=tmp_path)
    if message is None:
        assert out.returncode == 2 and "unknown method 'magic'; valid choices: deepobfuscator, disco, image_noise, maxent, no_noise, ours, resnet18" in out.stderr
        return
    assert out.returncode == 2, out.stdout + out.stderr
    assert message.replace("\\", "") in out.stderr or __import__("re").search(message, out.stderr)
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.slow
def test_resume_refuses_to_change_the_experiment(tmp_path):
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", *sets]) == 0
    out = run_cli("train", "--resume", str(tmp_path / "run"), "--set", "model.split=rn18_2")
    assert out.returncode == 2 and "cannot change model.split when resuming" in out.stderr
    out = run_cli("train", "--resume", str(tmp_path / "run"), "--no-progress")
    assert out.returncode == 0 and "already finished" in out.stdout


def test_info_reports_z_shape_without_training(capsys):
    assert main(["info", "--set", "model.split=rn18_1", "--image-size", "178"]) == 0
    out = capsys.readouterr().out
    assert "encoder output (64, 45, 45)" in out and "rn18_1" in out


@pytest.mark.slow
def test_finished_run_loads_without_data(tmp_path):
    import torch

    from privsplit import load_run
    from privsplit.errors import CheckpointError

    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", *sets, "--set", "adversaries=[{name: a}]"]) == 0
    run = load_run(tmp_path / "run")
    assert run.info.labels["utility"] == ["even", "odd"]
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        assert run.model(x)["task"].shape == (3, 2)
    (tmp_path / "run" / "run.json").unlink()
    with pytest.raises(CheckpointError, match="no finished training"):
        load_run(tmp_path / "run")
