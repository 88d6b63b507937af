"""Hostile settings and files: every bad value is a one-line error, never a traceback."""

import contextlib
import dataclasses
import io
import json
import shutil
import struct
import typing
import zlib

import numpy as np
import pytest
import yaml
from PIL import Image

from privsplit.cli import main
from privsplit.config import Config, apply_overrides, load_config
from privsplit.data.base import DataConfig, load_dataset
from privsplit.errors import CheckpointError, ConfigError, DataError, TrainingDiverged
from privsplit.train.engine import Trainer

# A tiny run that reads every reduction op's and an adversary's settings.
SWEEP_BASE = Config.from_dict({
    "data": {"image_size": 8, "limit_train": 32, "limit_test": 16},
    "reduction": [
        {"op": "frequency", "low": 0.0, "high": 0.5, "mode": "pass"},
        {"op": "noise", "sigma": 1.0, "normalize": "rms"},
        {"op": "replace", "fraction": 0.1},
        {"op": "shuffle", "fraction": 0.5},
        {"op": "resize", "size": 2, "mode": "bilinear"},
    ],
    "adversaries": [{"name": "adv", "kind": "attribute", "target": "private", "queries": 1, "objective": "ce"}],
    "train": {"epochs": 1, "batch_size": 16},
})
BAD_VALUES = ["'a'", "-1", "0", ".nan", ".inf", "-.inf", "''", "null", "[1]", "{}", "1e400"]


def setting_keys(node, prefix=""):
    """Dotted keys of every leaf setting of a config dict (list items by index)."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from setting_keys(value, f"{prefix}{key}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                yield from setting_keys(item, f"{prefix}{key}.{i}.")
        else:
            yield f"{prefix}{key}"


def dataclass_keys(tp, prefix=""):
    """Dotted keys of every field of the config dataclasses (the walk the sweep must cover)."""
    hints = typing.get_type_hints(tp)
    for f in dataclasses.fields(tp):
        inner = hints[f.name]
        if dataclasses.is_dataclass(inner):
            yield from dataclass_keys(inner, f"{prefix}{f.name}.")
        elif typing.get_origin(inner) is list and dataclasses.is_dataclass(typing.get_args(inner)[0]):
            yield from dataclass_keys(typing.get_args(inner)[0], f"{prefix}{f.name}.0.")
        else:
            yield f"{prefix}{f.name}"


def run_main(*argv):
    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        rc = main(list(argv))
    return rc, err.getvalue(), out.getvalue()


@pytest.mark.slow
def test_sweep_of_bad_values_gives_one_line_errors(tmp_path):
    keys = list(setting_keys(SWEEP_BASE.to_dict()))
    # The walk of the dataclasses and the config's own keys agree: no setting is missed.
    assert set(dataclass_keys(Config)) <= {k for k in keys if not k.startswith("reduction.")} | {"reduction"}
    base = tmp_path / "base.yaml"
    SWEEP_BASE.save(base)
    outcomes = {"refused": 0, "trained": 0}
    for i, key in enumerate(keys):
        for bad in BAD_VALUES:
            out = tmp_path / f"run{i}-{BAD_VALUES.index(bad)}"
            rc, err, _ = run_main("train", "--config", str(base), "--out", str(out), "--no-progress",
                               "--no-privacy-check", "--set", f"{key}={bad}")
            lines = err.strip().splitlines()
            if rc == 0:  # a value that is valid for this setting (e.g. 0 for a seed) trains
                outcomes["trained"] += 1
                assert (out / "run.json").is_file(), (key, bad)
                shutil.rmtree(out)  # ~150 MB of checkpoints each: do not fill the disk
            else:
                outcomes["refused"] += 1
                assert rc == 2 and len(lines) == 1 and lines[0].startswith("privsplit train: error: "), (key, bad, err)
    assert outcomes["refused"] > 8 * outcomes["trained"], outcomes


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr_head=-1", "train.lr_head must be > 0"),
        ("data.image_size=0", "data.image_size must be >= 8"),
        ("data.image_size=100000", "data.image_size must be <= 1024"),
        ("train.lam=.inf", "train.lam must be a finite number"),
        ("train.lam=.nan", "train.lam must be a finite number"),
        ("heads.0.name=my.head", "heads.name must be a name"),
        ("name=../../elsewhere", "name must be a name"),
        ("name=/tmp/abs", "name must be a name"),
        ("train.device=gpu", "train.device must be auto, cpu or cuda"),
        ("train.seed=-1", "train.seed must be >= 0"),
        ("data.split_seed=-1", "data.split_seed must be >= 0"),
        ("train.keep_checkpoints=0", "train.keep_checkpoints must be >= 1"),
        ("heads=[]", "needs at least one head"),
        ("adversaries=[{name: a, queries: .nan}]", "queries must be a whole number >= 1 or inf"),
        ("adversaries=[{name: a, queries: -.inf}]", "queries must be a whole number >= 1 or inf"),
    ],
)
def test_named_bad_values(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"op": "noise", "sigma": None}, "noise.sigma must be a number, got None"),
        ({"op": "noise", "sigma": "a"}, "noise.sigma must be a number, got 'a'"),
        ({"op": "noise", "sigma": float("inf")}, "noise.sigma must be a finite number"),
        ({"op": "shuffle", "fraction": [1]}, "shuffle.fraction must be a number"),
        ({"op": ["noise"]}, "reduction op must be one of"),
        ({"op": "resize", "size": [2, "a"]}, "resize.size"),
    ],
)
def test_reduction_op_arguments_are_typed(spec, message):
    from privsplit.reduction import Reduction

    with pytest.raises(ConfigError, match=message):
        Reduction.from_config([spec])


@pytest.mark.parametrize(
    "method, arg",
    [("image_noise", "sigma=.nan"), ("image_noise", "sigma=.inf"), ("maxent", "dim=.nan"),
     ("deepobfuscator", "w_attribute=.nan"), ("disco", "ratio=.inf")],
)
def test_method_args_must_be_finite(method, arg):
    rc, err, _ = run_main("info", "--set", f"method={method}", "--set", "reduction=[]", "--set", f"method_args.{arg}")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "finite" in err or "must be a whole number" in err


def test_settings_are_checked_when_built_in_python_too():
    from privsplit.train.config import TrainConfig

    with pytest.raises(ConfigError, match="train.lam must be a finite number"):
        TrainConfig(lam=float("nan"))
    cfg = Config()
    cfg.train.epochs = -3  # changed after it was built: the trainer checks again
    with pytest.raises(ConfigError, match="train.epochs must be >= 1"):
        Trainer(cfg, "unused")


def test_config_file_that_is_not_utf8(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"train:\n  epochs: \xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(p)
    rc, err, _ = run_main("train", "--config", str(p))
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_run_name_cannot_leave_the_runs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err, _ = run_main("train", "--set", "name=../../elsewhere", "--no-progress")
    assert rc == 2 and "name must be a name" in err
    assert not any(tmp_path.parent.parent.glob("elsewhere*"))


# --- training stops on a non-finite loss; resuming checks its config and checkpoint -----------------------


@pytest.mark.slow
def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tiny, tmp_path):
    from privsplit.train.engine import Callback

    class Overflow(Callback):
        def on_epoch_end(self, ctx):  # from epoch 2 on, lam * privacy term overflows float32 to -inf
            ctx.cfg.train.lam = 1e300

    run = tmp_path / "run"
    cfg = tiny("train.epochs=2", "adversaries=[{name: adv}]")
    with pytest.raises(TrainingDiverged, match=r"epoch 2: a loss is not finite.*epoch-0001"):
        Trainer(cfg, run, callbacks=[Overflow()], progress=False).fit()
    assert (run / "checkpoints" / "epoch-0001" / "model.safetensors").is_file()
    assert not (run / "checkpoints" / "epoch-0002").exists() and not (run / "run.json").exists()
    assert [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [1]


@pytest.mark.slow
def test_resume_from_python_refuses_a_changed_experiment(tiny, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny("train.epochs=1"), run, progress=False).fit()
    for change in ("train.lam=0.5", "reduction.0.sigma=8"):
        with pytest.raises(ConfigError, match=f"cannot change {change.split('=')[0]} when resuming"):
            Trainer(tiny("train.epochs=2", change), run, resume=True, progress=False).fit()
    assert load_config(run / "config.yaml").train.lam == Config().train.lam
    Trainer(tiny("train.epochs=2"), run, resume=True, progress=False).fit()  # epochs may change
    assert load_config(run / "config.yaml").train.epochs == 2


@pytest.mark.parametrize(
    "meta, message",
    [
        (b"\xff\xfe not utf-8", "cannot read meta.json"),
        (b"{\"format\": \"privsplit-checkpoint\"", "cannot read meta.json"),
        (b"[1, 2]", "no format"),
        (json.dumps({"format": "privsplit-checkpoint", "version": 1, "epoch": "x", "optimizer_groups": {}}).encode(),
         "meta.json is corrupt"),
        (json.dumps({"format": "privsplit-checkpoint", "version": 1, "epoch": 1, "optimizer_groups": []}).encode(),
         "meta.json is corrupt"),
    ],
)
@pytest.mark.slow
def test_corrupt_checkpoint_meta_is_one_line(tiny, tmp_path, meta, message):
    run = tmp_path / "run"
    Trainer(tiny("train.epochs=1"), run, progress=False).fit()
    (run / "checkpoints" / "epoch-0001" / "meta.json").write_bytes(meta)
    with pytest.raises(CheckpointError, match=message):
        Trainer(tiny("train.epochs=2"), run, resume=True, progress=False).fit()


@pytest.mark.slow
def test_half_written_metrics_line_does_not_block_resume(tiny, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny("train.epochs=1"), run, progress=False).fit()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train/ta')  # killed while appending
    Trainer(tiny("train.epochs=2"), run, resume=True, progress=False).fit()
    assert [json.loads(ln)["epoch"] for ln in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


# --- bad image files: checked when the data set is opened ------------------------------------------------


def bomb_png(path, side=30_000):
    """A valid PNG header claiming side x side pixels, with a tiny body: decoding it would need gigabytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))


def utkface_folder(root, n=12):
    d = root / "UTKFace"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(arr).save(d / f"{20 + i}_{i % 2}_{i % 5}_2017{i:04d}.jpg.chip.jpg", quality=90)
    whole = (d / "20_0_0_20170000.jpg.chip.jpg").read_bytes()
    (d / "30_1_1_2017bad1.jpg.chip.jpg").write_bytes(whole[:-40])  # truncated
    (d / "31_0_2_2017bad2.jpg.chip.jpg").write_bytes(b"")  # 0 bytes
    (d / "32_1_3_2017bad3.jpg.chip.jpg").write_text("not an image\n")  # text named .jpg
    bomb_png(d / "33_0_4_2017bad4.jpg.chip.jpg")  # decompression bomb: Pillow refuses it
    bomb_png(d / "34_1_0_2017bad5.jpg.chip.jpg", 8000)  # below Pillow's limit, above ours
    return d


def test_bad_image_files_are_named_at_open(tmp_path):
    utkface_folder(tmp_path)
    cfg = DataConfig(name="utkface", root=str(tmp_path), image_size=16, test_fraction=0.3)
    with pytest.raises(DataError) as e:
        load_dataset(cfg)
    msg = str(e.value)
    assert msg.startswith("5 of 17 image file(s) cannot be used") and "data.skip_bad_files=true" in msg
    for name, why in [("bad1", "truncated JPEG"), ("bad2", "empty file"), ("bad3", "not an image"),
                      ("bad4", "too many pixels to decode safely"), ("bad5", "8000x8000 pixels")]:
        assert f"2017{name}.jpg.chip.jpg: {why}" in msg


@pytest.mark.slow
def test_bad_image_files_can_be_skipped_and_are_listed(tmp_path):
    utkface_folder(tmp_path)
    run = tmp_path / "run"
    rc, err, out = run_main("train", "--out", str(run), "--no-progress", "--no-privacy-check",
                            "--set", "data.name=utkface", "--set", f"data.root={tmp_path}", "--set", "data.image_size=16",
                       "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", "data.skip_bad_files=true")
    assert rc == 0, err
    listed = (run / "skipped_files.txt").read_text().splitlines()
    assert len(listed) == 5 and all("2017bad" in ln for ln in listed)
    assert "left out 5 unreadable image file(s)" in out and str(run / "skipped_files.txt") in out
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "finished"


def test_cifar_folder_with_a_bad_file(tmp_path):
    from privsplit.data.cifar10 import CLASSES

    for split in ("train", "test"):
        for c in CLASSES:
            d = tmp_path / split / c
            d.mkdir(parents=True)
            Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(d / "0.png")
    (tmp_path / "train" / "cat" / "1.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut")
    with pytest.raises(DataError, match=r"1 of 11 image file\(s\).*cat/1.jpg: "):
        load_dataset(DataConfig(name="cifar10", root=str(tmp_path)))
    train, _, info = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), skip_bad_files=True))
    assert len(train) == 10 and len(info.skipped) == 1


def test_config_yaml_round_trips_the_sweep_base():
    assert Config.from_dict(yaml.safe_load(SWEEP_BASE.to_yaml())) == SWEEP_BASE


@pytest.mark.parametrize(
    "argv, message",
    [
        (["evaluate", "RUN", "--attack-epochs", "-1"], "argument --attack-epochs: must be >= 1, got -1"),
        (["evaluate", "RUN", "--attack-lr", "nan"], "argument --attack-lr: must be a finite number, got nan"),
        (["evaluate", "RUN", "--latency-threads", "0"], "argument --latency-threads: must be >= 1, got 0"),
        (["info", "--image-size", "0"], "argument --image-size: must be >= 8, got 0"),
        (["benchmark", "--dataset", "digits", "--threads", "x"], "argument --threads: must be a whole number, got 'x'"),
        (["infer", "RUN", "a.jpg", "--server", "http://x", "--seed", "-2"], "argument --seed: must be >= 0, got -2"),
    ],
)
def test_number_flags_are_checked_by_the_parser(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_edge_client_applies_the_token_rules(tmp_path):
    from privsplit_edge.client import main as edge_main

    bad = tmp_path / "token"
    bad.write_bytes(b"\xff\xfe" + b"x" * 20)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = edge_main(["infer", str(tmp_path), "a.jpg", "--server", "http://127.0.0.1:9", "--token-file", str(bad)])
    assert rc == 2 and "is not text (not UTF-8)" in err.getvalue() and len(err.getvalue().strip().splitlines()) == 1
