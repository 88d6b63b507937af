"""Issue 21: what a newcomer meets in the first hour (the quick privacy check, verdicts,
progress off a terminal, subset decoding, flags, --json)."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from privsplit.cli import main

SETS = [a for s in TINY for a in ("--set", s)]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny digits run trained with the quick check on, through the command line."""
    d = tmp_path_factory.mktemp("newcomer") / "run"
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--out", str(d), "--no-progress", "--device", "cpu", "--threads", "1", *SETS]) == 0
    finally:
        torch.set_num_threads(threads)
    return d


# Item 2: the quick check is a lower bound, says so, and is saved -----------------------------------------------


@pytest.mark.slow
def test_quick_check_is_saved_in_run_json_as_a_lower_bound(tiny_run):
    record = json.loads((tiny_run / "run.json").read_text())
    q = record["quick_privacy"]
    assert q["lower_bound"] is True and "lower bound" in q["note"]
    assert list(q["privacy_by_queries"]) == ["1", "16"]
    assert all(0 <= v <= 1 for v in q["privacy_by_queries"].values())
    assert "head" not in q["families"] and {"mlp", "linear", "mlp_flat", "knn"} <= set(q["families"])
    assert q["epochs"] == 10 and q["n_train"] == 96 and q["n_test"] == 48 and q["fresh_draws"] is True
    assert 0 < q["chance"] < 1 and q["wall_s"] >= 0


@pytest.mark.slow
def test_quick_check_never_exceeds_evaluate_on_the_same_images(tiny_run, tmp_path, capsys):
    """Each quick attacker is one of evaluate's (same seed whichever families run), so the
    full evaluation's best attacker is at least as good at every k."""
    q = json.loads((tiny_run / "run.json").read_text())["quick_privacy"]
    out = tmp_path / "eval"
    assert main(["evaluate", str(tiny_run), "--out", str(out), "--attacks", "attribute", "--queries", "1,16",
                 "--latency-repeats", "0", "--no-progress"]) == 0
    r = json.loads((out / "results.json").read_text())
    for k in ("1", "16"):
        assert r["privacy_by_queries"][k] >= q["privacy_by_queries"][k], (k, r["privacy_by_queries"], q)
        fams = r["attacks"]["attribute"]["by_queries"][k]["families"]
        assert max(fams[f]["best_acc"] for f in q["families"]) == pytest.approx(q["privacy_by_queries"][k])


def test_a_familys_attacker_does_not_depend_on_the_others():
    from privsplit.attacks import ATTACKS, AttackOptions
    from test_attacks import _data
    from privsplit.config import Config, apply_overrides

    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 4, (300,), generator=g)
    z = torch.randn(300, 512, generator=g)
    z[:, :4] += 1.5 * torch.nn.functional.one_hot(y, 4)
    cfg = apply_overrides(Config(), ["model.split=rn18_4"])
    quiet = {"progress": False, "log": lambda s: None, "epochs": 3}

    def run(families):
        data = _data(cfg, z[:200], z[200:], y[:200], y[200:], 4, chain=[{"op": "noise", "sigma": 1.0}])
        return ATTACKS.create("attribute").run(data, AttackOptions(families=families, **quiet))["families"]

    alone, together = run(("linear",)), run(("mlp", "linear", "knn"))
    assert alone["linear"]["test_acc"] == together["linear"]["test_acc"]


@pytest.mark.slow
def test_default_run_quick_check_within_5_points_of_evaluate(tmp_path):
    """The built-in default run (`privsplit train`, 8x8 digits): the quick check is within 5
    points of `privsplit evaluate`'s one-query figure, and not above it."""
    run = tmp_path / "default"
    assert main(["train", "--out", str(run), "--no-progress"]) == 0
    q = json.loads((run / "run.json").read_text())["quick_privacy"]
    out = tmp_path / "eval"
    # Every family (the head too) at the quick check's k: k = inf, which the check does not
    # measure, would double evaluate's time here and compare nothing.
    assert main(["evaluate", str(run), "--out", str(out), "--attacks", "attribute", "--latency-repeats", "0",
                 "--queries", "1,16", "--no-progress"]) == 0
    full = json.loads((out / "results.json").read_text())["privacy_by_queries"]
    assert full["1"] - 0.05 <= q["privacy_by_queries"]["1"] <= full["1"], (q["privacy_by_queries"], full)
    assert q["privacy_by_queries"]["16"] <= full["16"]


# Item 3: verdicts are the worst over k; a model that learned nothing is flagged ------------------------------------


def _attr(by):
    """An attribute result with per-k accuracies ``by`` (chance 10%, threshold 13%)."""
    by_q = {k: {"accuracy": v, "best_family": "mlp", "verdict": "leaks" if v > 0.13 else "at chance",
                "families": {"mlp": {"best_acc": v, "test_acc": [v], "train_loss": [1.0], "best_epoch": 1,
                                     "converged": True}}, "not_converged": []} for k, v in by.items()}
    return {"target": "private", "chance": 0.10, "leak_threshold": 0.13, **by_q["1"], "by_queries": by_q,
            "queries": list(by), "lr": 1e-3, "batch_size": 128, "epochs": 1, "seed": 0, "chance_given": {}}


def _results(attr, utility=0.9, chance=0.6, learned=None):
    r = {"run": "r", "name": "r", "n_train": 10, "n_test": 10, "z_shape": [4], "utility": utility,
         "utility_chance": chance, "privacy": attr["accuracy"], "privacy_chance": attr["chance"],
         "delta": utility - attr["accuracy"], "attacks": {"attribute": attr},
         "privacy_by_queries": {k: v["accuracy"] for k, v in attr["by_queries"].items()},
         "heads": {"task": {"target": "utility", "accuracy": utility, "chance": chance, "learned": learned}},
         "cost": {"gflops": 0.0, "memory_mb": 0.0, "bytes_per_sample_float32": 16, "latency_ms_cpu_batch1": None,
                  "bytes_per_sample_float16": 8, "image_bytes_uint8": 768, "latency_threads": 1, "counting": "none"},
         "config": {"method": "ours", "model": {"backbone": "resnet18", "split": "rn18_4"}, "reduction": []},
         "dataset": "synthetic", "image_shape": [3, 16, 16], "data_overrides": [], "seeds": {"draws": 0}}
    if learned is not None:
        r["task_learned"] = learned
    return r


def test_verdict_is_the_worst_over_the_queries_measured():
    from privsplit import report

    r = _results(_attr({"1": 0.10, "16": 0.19, "inf": 0.35}))
    line = next(v for v in report.verdict_lines(r) if v.startswith("attribute attack"))
    assert "-> leaks" in line and "worst 35.00% at inf queries" in line, line
    assert report.attribute_verdict(r["attacks"]["attribute"]) == "leaks"
    at_chance = _results(_attr({"1": 0.10, "16": 0.11, "inf": 0.12}))
    assert "-> at chance" in report.verdict_lines(at_chance)[0]
    assert "attribute leaks" in report.comparison_markdown([r])


def test_attribute_attack_verdict_is_worst_over_k():
    """A real attack: noise hides a label at one query, averaging 16 reveals it."""
    from privsplit.attacks import ATTACKS, AttackOptions
    from privsplit.config import Config, apply_overrides
    from test_attacks import _data

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (1200,), generator=g)
    e = torch.nn.functional.one_hot(y, 4).float().repeat(1, 8)  # (N, 32): the label, written plainly
    cfg = apply_overrides(Config(), ["model.split=rn18_4"])
    data = _data(cfg, e[:800], e[800:], y[:800], y[800:], 4, chain=[{"op": "noise", "sigma": 60.0, "normalize": "none"}])
    r = ATTACKS.create("attribute").run(data, AttackOptions(epochs=3, families=("linear",), queries=(1, 16, math.inf),
                                                            progress=False, log=lambda s: None))
    assert r["by_queries"]["inf"]["verdict"] == "leaks"
    assert r["verdict"] == "leaks" and r["worst_queries"] == max(r["by_queries"],
                                                                  key=lambda k: r["by_queries"][k]["accuracy"])
    assert r["worst_accuracy"] >= r["accuracy"] and r["verdict_1"] == r["by_queries"]["1"]["verdict"]


def test_delta_of_a_model_that_has_not_learned_is_flagged():
    from privsplit import report

    r = _results(_attr({"1": 0.10}), utility=0.49, chance=0.5348, learned=False)
    assert any("has not learned its task" in v for v in report.verdict_lines(r))
    summary = "\n".join(report.summary_lines(r))
    assert "NOT LEARNED" in summary and "meaningless: the model has not learned its task" in summary
    md = report.run_markdown(r)
    assert "meaningless: the model has not learned its task" in md
    assert "task not learned" in report.comparison_markdown([r])
    learned = _results(_attr({"1": 0.10}), utility=0.95, chance=0.55, learned=True)
    assert not any("not learned" in v for v in report.verdict_lines(learned))


@pytest.mark.slow
def test_evaluate_records_task_learned(tiny_run, tmp_path):
    out = tmp_path / "e"
    assert main(["attack", str(tiny_run), "--attack", "attribute", "--families", "knn", "--queries", "1",
                 "--latency-repeats", "0", "--no-progress", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    from privsplit.evaluate import task_learned

    assert r["task_learned"] == task_learned(r["utility"], r["utility_chance"], r["n_test"])
    assert r["heads"]["task"]["learned"] == r["task_learned"]


# Item 5: progress off a terminal; decode only the subset ---------------------------------------------------------


def test_progress_prints_lines_with_rate_and_eta_when_not_a_terminal(monkeypatch):
    import io
    import time

    from privsplit.progress import Progress

    monkeypatch.setenv("PRIVSPLIT_PROGRESS_SECONDS", "0.05")
    buf = io.StringIO()  # not a terminal
    for _ in Progress(range(6), desc="stage", unit="batch", file=buf):
        time.sleep(0.03)
    lines = buf.getvalue().splitlines()
    assert 2 <= len(lines) <= 6, lines  # every few steps, not per step
    assert all(ln.startswith("stage: ") and "batch/s" in ln for ln in lines)
    assert any("ETA" in ln for ln in lines) and lines[-1].startswith("stage: 6/6 batch (100%)")
    quiet = io.StringIO()
    for _ in Progress(range(3), desc="fast", file=quiet):  # a stage shorter than the interval: nothing
        pass
    for _ in Progress(range(6), desc="off", file=quiet, enabled=False):
        time.sleep(0.03)
    assert quiet.getvalue() == ""


@pytest.mark.slow
def test_training_and_evaluation_print_progress_lines_without_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PRIVSPLIT_PROGRESS_SECONDS", "0")
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--out", str(tmp_path / "run"), "--no-privacy-check", "--threads", "1", *SETS]) == 0
        err = capsys.readouterr().err
        assert "epoch 1/1: " in err and "batch/s" in err, err
        assert main(["attack", str(tmp_path / "run"), "--attack", "attribute", "--families", "mlp,knn",
                     "--queries", "1", "--attack-epochs", "2", "--latency-repeats", "0",
                     "--out", str(tmp_path / "a")]) == 0
        err = capsys.readouterr().err
        assert "encode train: " in err and "attacker mlp at 1 query: " in err and "batch/s" in err, err
    finally:
        torch.set_num_threads(threads)


def _cifar_folder(root, per_class=(7, 3)):
    from privsplit.data.cifar10 import CLASSES

    rng = np.random.default_rng(5)
    for split, n in zip(("train", "test"), per_class):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for j in range(n):
                arr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                path = root / split / c / f"{j:03d}.{'jpg' if j % 2 else 'png'}"
                Image.fromarray(arr).save(path, **({"quality": 90} if j % 2 else {}))


def test_limits_decode_only_the_subset_and_choose_the_same_images(tmp_path, monkeypatch):
    from privsplit.data import DataConfig, load_dataset
    from privsplit.data import cifar10

    _cifar_folder(tmp_path)
    decoded = []
    real = cifar10._decode
    monkeypatch.setattr(cifar10, "_decode", lambda p: (decoded.append(p), real(p))[1])
    for seed in (0, 3):
        full_train, full_test, _ = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), split_seed=seed))
        assert len(decoded) == 100
        decoded.clear()
        cfg = DataConfig(name="cifar10", root=str(tmp_path), limit_train=13, limit_test=7, split_seed=seed)
        train, test, _ = load_dataset(cfg)
        assert len(decoded) == 13 + 7, "only the images the run uses are decoded"
        decoded.clear()
        # the same images as decoding everything and then taking the seeded subset (the old way)
        want_train, want_test = full_train.subset(13, seed), full_test.subset(7, seed)
        assert torch.equal(train.images, want_train.images) and torch.equal(test.images, want_test.images)
        for t in ("utility", "private"):
            assert torch.equal(train.labels[t], want_train.labels[t]) and torch.equal(test.labels[t], want_test.labels[t])
    # with val_fraction too: the validation split is carved from the same subset
    a, va, _ = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), limit_train=20, val_fraction=0.25))
    assert len(a) == 15 and len(va) == 5


@pytest.mark.slow
def test_no_progress_silences_data_loading_lines_too(tmp_path, monkeypatch, capsys):
    # Loading is not handed the flag: --no-progress is the process-wide default while a command runs.
    monkeypatch.setenv("PRIVSPLIT_PROGRESS_SECONDS", "0")
    _cifar_folder(tmp_path / "c10", per_class=(4, 2))
    sets = ["data.name=cifar10", f"data.root={tmp_path / 'c10'}", "data.image_size=16", "train.epochs=1",
            "train.batch_size=20"]
    cmd = ["train", "--out", "", "--no-privacy-check", "--threads", "1", *[a for s in sets for a in ("--set", s)]]
    for quiet, run in ((False, "loud"), (True, "quiet")):
        cmd[2] = str(tmp_path / run)
        assert main(cmd + (["--no-progress"] if quiet else [])) == 0
        err = capsys.readouterr().err
        assert ("decoding train: " in err) is not quiet and ("epoch 1/1: " in err) is not quiet, err
    from privsplit import progress

    assert progress._default_enabled is None, "main() leaves the process's default as it found it"


def test_batches_layout_limits_give_the_same_images(tmp_path):
    from privsplit.data import DataConfig, load_dataset
    from test_data import _write_batches

    _write_batches(tmp_path, n=9)
    full, full_test, _ = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), image_size=16))
    part, part_test, _ = load_dataset(DataConfig(name="cifar10", root=str(tmp_path), image_size=16, limit_train=11,
                                                 limit_test=4, split_seed=2))
    assert torch.equal(part.images, full.subset(11, 2).images)
    assert torch.equal(part_test.labels["private"], full_test.subset(4, 2).labels["private"])


def test_file_backed_limits_check_only_the_subset(tmp_path, monkeypatch):
    from privsplit.data import DataConfig, load_dataset
    from privsplit.data import base

    d = tmp_path / "UTKFace"
    d.mkdir()
    for i in range(30):
        Image.fromarray(np.full((20, 20, 3), 5 * i, np.uint8)).save(d / f"{20 + i}_{i % 2}_{i % 5}_2017011617{i:04d}.jpg.chip.jpg")
    checked = []
    real = base.image_problem
    monkeypatch.setattr(base, "image_problem", lambda p: (checked.append(p), real(p))[1])
    full, full_test, _ = load_dataset(DataConfig(name="utkface", root=str(tmp_path), image_size=16))
    assert len(checked) == 30
    checked.clear()
    part, part_test, _ = load_dataset(DataConfig(name="utkface", root=str(tmp_path), image_size=16, limit_train=5,
                                                 limit_test=2))
    assert len(checked) == 7
    assert part.paths == full.subset(5, 0).paths and part_test.paths == full_test.subset(2, 0).paths


# Item 6: flags ---------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_takes_device_and_threads(tiny_run):
    import yaml

    cfg = yaml.safe_load((tiny_run / "config.yaml").read_text())
    assert cfg["train"]["device"] == "cpu" and cfg["train"]["threads"] == 1
    assert json.loads((tiny_run / "run.json").read_text())["device"] == "cpu"


def test_flags_help_is_truthful(capsys):
    from privsplit.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    train = commands["train"].format_help()
    assert "--device" in train and "--threads" in train and "--json" in train
    assert "newest train.keep_checkpoints, default 2" in " ".join(train.split())
    attack = " ".join(commands["attack"].format_help().split())
    assert "default: RUN_DIR/eval/attack-NAME/" in attack.replace("attack- NAME", "attack-NAME") and "--json" in attack
    for name in ("train", "evaluate", "attack", "benchmark"):
        text = commands[name].format_help()
        assert "--device" in text and "--threads" in text, name


def test_bad_device_is_one_line(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--device", "tpu"])
    err = capsys.readouterr().err
    assert "must be auto, cpu or cuda[:N]" in err and "Traceback" not in err


@pytest.mark.slow
def test_keep_checkpoints_as_the_help_says(tiny_run, tmp_path):
    from privsplit.train.checkpoint import checkpoint_dirs

    run = tmp_path / "three"
    assert main(["train", "--out", str(run), "--no-progress", "--no-privacy-check", *SETS,
                 "--set", "train.epochs=3"]) == 0
    assert [d.name for d in checkpoint_dirs(run)] == ["epoch-0002", "epoch-0003"]


# Item 8: --json --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_json_is_the_only_thing_on_stdout(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", "--json", *SETS]) == 0
    finally:
        torch.set_num_threads(threads)
    captured = capsys.readouterr()
    record = json.loads(captured.out)  # nothing else on stdout
    assert record["run_dir"] == str(tmp_path / "run") and record["status"] == "finished"
    assert record["quick_privacy"]["lower_bound"] is True and "1" in record["quick_privacy"]["privacy_by_queries"]
    assert "finished: ours on digits" in captured.err and "privacy (quick check, a lower bound)" in captured.err


@pytest.mark.slow
def test_evaluate_and_attack_json(tiny_run, tmp_path, capsys):
    args = ["--families", "knn", "--queries", "1,inf", "--latency-repeats", "0", "--no-progress", "--json"]
    assert main(["evaluate", str(tiny_run), "--out", str(tmp_path / "e"), "--attacks", "attribute", *args]) == 0
    captured = capsys.readouterr()
    runs = json.loads(captured.out)["runs"]  # strict JSON: json.loads refuses nothing here
    assert len(runs) == 1 and runs[0]["privacy_by_queries"]["1"] == runs[0]["privacy"]
    assert "verdict:" in captured.err
    assert main(["attack", str(tiny_run), "--attack", "attribute", "--out", str(tmp_path / "a"), *args]) == 0
    one = json.loads(capsys.readouterr().out)
    assert list(one["attacks"]) == ["attribute"] and "task_learned" in one
