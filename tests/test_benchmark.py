"""`privsplit benchmark`: a tiny real benchmark on digits, resumption, refusals."""

import json
import shutil

import pytest

from privsplit.cli import main

METHODS = "ours_rn18_3,resnet18,maxent"


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "digits-tiny"
    rc = main(["benchmark", "--dataset", "digits", "--budget", "tiny", "--methods", METHODS, "--out", str(out),
               "--no-progress"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_tiny_benchmark_writes_tables_and_plot(bench, capsys):
    md = (bench / "benchmark.md").read_text()
    names = METHODS.split(",")
    for table in ("privacy@1 ↓ | best attacker | privacy@16 ↓ | privacy@inf ↓ | utility ↑ | delta@1 ↑ | delta@16 ↑", "MSE ↑ | L1 ↑ | SSIM ↓ | MS-SSIM ↓ | PSNR ↓ | LPIPS ↑",
                  "GFLOPs", "| method | training (s) | evaluation (s) |"):
        assert table in md
    # One row per method in each of the four tables, plus the chance / mean-image reference rows.
    for n in names:
        assert sum(line.startswith(f"| {n} |") for line in md.splitlines()) == 4
    assert "| chance |" in md and "| mean training image (no z) |" in md
    assert "| knowing the utility label (no z) |" in md
    assert (bench / "privacy_utility.png").stat().st_size > 1000
    record = json.loads((bench / "benchmark.json").read_text())
    assert record["dataset"] == "digits" and record["budget"] == "tiny" and record["entries"] == names
    runs = json.loads((bench / "results.json").read_text())["runs"]
    assert [r["name"] for r in runs] == names
    # Same data, epochs and attackers for every method.
    assert {(r["n_train"], r["n_test"], r["config"]["train"]["epochs"], r["attacks"]["attribute"]["epochs"]) for r in runs} \
        == {(640, 359, 5, 3)}  # limit_test 360: all 359 of digits
    row = next(line for line in md.splitlines() if line.startswith("| ours_rn18_3 | rn18_3 |"))
    ours = runs[0]
    assert f"{100 * ours['privacy']:.2f}%" in row and f"{100 * ours['utility']:.2f}%" in row
    attr = ours["attacks"]["attribute"]
    assert f"| {attr['best_family']} (" in row
    # Repeated queries: privacy@16 and @inf of ours (random), one value for every k of maxent (deterministic).
    by = ours["privacy_by_queries"]
    assert f"| {100 * by['16']:.2f}% | {100 * by['inf']:.2f}% |" in row
    assert f"{100 * ours['delta_by_queries']['16']:+.2f} |" in row
    maxent = next(r for r in runs if r["name"] == "maxent")
    assert len(set(maxent["privacy_by_queries"].values())) == 1
    assert (bench / "privacy_queries.png").stat().st_size > 1000
    # The time table: training = the sum of the run's epoch times, evaluation = the evaluator's wall time.
    epochs = [json.loads(line) for line in (bench / "ours_rn18_3" / "metrics.jsonl").read_text().splitlines()]
    time_row = [line for line in md.splitlines() if line.startswith("| ours_rn18_3 |")][-1]
    assert time_row == f"| ours_rn18_3 | {sum(e['epoch_s'] for e in epochs):.0f} | {ours['wall_s']:.0f} |"


@pytest.mark.slow
def test_tiny_budget_models_learn_and_warnings_are_one_line_per_method(bench):
    """The tiny budget is a first look worth reading: every model learns its task
    (utility clearly above chance on digits), the noise of ours shows (privacy at one
    query far below the noise-free limit), and attackers still improving after the
    budget's 3 epochs are one line per method, not one per attacker."""
    from privsplit.benchmark import BUDGETS
    from privsplit.evaluate import task_learned

    runs = {r["name"]: r for r in json.loads((bench / "results.json").read_text())["runs"]}
    for r in runs.values():
        assert r["utility"] > r["utility_chance"] + 0.15, (r["name"], r["utility"], r["utility_chance"])
        assert task_learned(r["utility"], r["utility_chance"], r["n_test"])
    ours = runs["ours_rn18_3"]["privacy_by_queries"]
    assert ours["1"] + 0.2 < ours["inf"]  # the noise hides much at one query, little in the limit
    assert runs["resnet18"]["privacy"] > 0.5  # the raw features leak the digit
    md = (bench / "benchmark.md").read_text()
    warn = md.split("## Warnings", 1)[1].split("![", 1)[0].strip().splitlines() if "## Warnings" in md else []
    assert "had not converged" not in md and "--attack-epochs" not in md  # the benchmark has no such flag
    if warn:
        assert warn[0].startswith("- attackers still improving at their last epoch (budget `tiny` trains each 3 epoch(s))")
        assert all(line.startswith("  - ") and line[4:].split(":")[0] in runs for line in warn[1:])
        assert len(warn) <= 1 + len(runs)
    assert "min of CPU time" in BUDGETS["tiny"].about  # the time it states was measured (README: Benchmark)


@pytest.mark.slow
def test_second_run_resumes_without_retraining(bench, capsys):
    stamps = {n: (bench / n / "run.json").stat().st_mtime_ns for n in METHODS.split(",")}
    evals = {n: (bench / n / "eval" / "results.json").stat().st_mtime_ns for n in METHODS.split(",")}
    # An interrupted run (no run.json yet) continues from its checkpoint and is evaluated again.
    (bench / "maxent" / "run.json").unlink()
    capsys.readouterr()
    assert main(["benchmark", "--dataset", "digits", "--budget", "tiny", "--methods", METHODS, "--out", str(bench),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "ours_rn18_3: trained already, skipping training" in out
    assert "ours_rn18_3: evaluated already" in out
    assert "maxent: resuming" in out
    for n in ("ours_rn18_3", "resnet18"):
        assert (bench / n / "run.json").stat().st_mtime_ns == stamps[n]
        assert (bench / n / "eval" / "results.json").stat().st_mtime_ns == evals[n]
    assert (bench / "maxent" / "run.json").is_file()
    assert (bench / "maxent" / "eval" / "results.json").stat().st_mtime_ns > evals["maxent"]
    assert "| maxent |" in (bench / "benchmark.md").read_text()


@pytest.mark.slow
def test_other_budget_or_dataset_is_refused(bench, capsys):
    before = (bench / "benchmark.json").read_text()
    assert main(["benchmark", "--dataset", "digits", "--budget", "small", "--methods", "ours", "--out", str(bench)]) == 2
    err = capsys.readouterr().err
    assert "budget 'tiny'" in err and "choose another --out" in err
    assert main(["benchmark", "--dataset", "cifar10", "--budget", "tiny", "--methods", "ours", "--out", str(bench)]) == 2
    assert "digits benchmark" in capsys.readouterr().err
    assert (bench / "benchmark.json").read_text() == before


def test_unknown_method_lists_valid_choices(tmp_path, capsys):
    assert main(["benchmark", "--dataset", "digits", "--methods", "ours,foo", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "'foo'" in err
    for valid in ("ours", "no_noise", "resnet18", "image_noise", "maxent", "disco", "deepobfuscator", "ours_rn18_4"):
        assert valid in err
    assert not (tmp_path / "b").exists()


def test_unknown_budget_and_dataset(tmp_path, capsys):
    assert main(["benchmark", "--dataset", "digits", "--budget", "huge", "--out", str(tmp_path / "b")]) == 2
    assert "tiny, small, faces-cpu, paper" in capsys.readouterr().err
    assert main(["benchmark", "--dataset", "mnist", "--out", str(tmp_path / "b")]) == 2
    assert "cifar10" in capsys.readouterr().err


def test_method_that_cannot_serve_the_dataset_says_why(tmp_path, capsys):
    from privsplit.benchmark import CONFIG_DIR

    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    # image_noise has a default sigma for the known datasets only; a config naming
    # a setting the method does not have cannot be served either.
    path = configs / "cifar10_image_noise.yaml"
    path.write_text(path.read_text().replace("{sigma: 0.8}", "{sigma: 0.8, radius: 3}"))
    assert main(["benchmark", "--dataset", "digits", "--budget", "tiny", "--methods", "image_noise",
                 "--configs", str(configs), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "image_noise (image_noise) cannot run on digits" in err and "radius" in err
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_configs_for_every_dataset_and_budget():
    """Each entry has a config for each dataset; the budget is the same for all."""
    from privsplit.benchmark import BUDGETS, ENTRIES, check_serves, entry_config

    for dataset in ("cifar10", "celeba", "fairface", "utkface", "digits"):
        cfgs = [entry_config(e, dataset, BUDGETS["small"]) for e in ENTRIES]
        for e, cfg in zip(ENTRIES, cfgs):
            assert cfg.data.name == dataset and cfg.method == e.method
            check_serves(e, cfg)
        assert {(c.train.epochs, c.data.limit_train, c.data.limit_test, c.data.image_size) for c in cfgs} == {
            (5, 20000, 5000, 32 if dataset in ("cifar10", "digits") else 178)}
    faces = entry_config(ENTRIES[5], "utkface", BUDGETS["paper"])
    assert "sigma" not in faces.method_args  # the method's face default (2), not CIFAR-10's 0.8
    assert faces.data.limit_train is None and faces.train.epochs == 20


@pytest.mark.slow
def test_tiny_benchmark_on_real_cifar10(cifar_root, tmp_path, capsys):
    """The CIFAR-10 configs themselves, end to end, on the real data (tiny budget)."""
    out = tmp_path / "cifar"
    assert main(["benchmark", "--dataset", "cifar10", "--budget", "tiny", "--methods", "image_noise",
                 "--data-root", str(cifar_root), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "# Benchmark: cifar10, budget `tiny`" in printed
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["name"], r["config"]["method"], r["dataset"], r["n_train"]) for r in runs] == [
        ("image_noise", "image_noise", "cifar10", 640)]
    assert runs[0]["config"]["method_args"] == {"sigma": 0.8}  # from configs/cifar10_image_noise.yaml
    assert "| image_noise | image |" in (out / "benchmark.md").read_text()
