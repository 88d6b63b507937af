"""The run folder's one owner: its paths, its metrics.jsonl reader, run.json, its writers."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from privsplit.errors import CheckpointError
from privsplit.rundir import RunDir, append_line, write_json, write_text


def _run_folder(path: Path, record: dict | None = None) -> RunDir:
    """A run folder with only what run.json's reader looks at."""
    rd = RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    write_text(rd.config, "method: ours\n")
    if record is not None:
        rd.write_record(record)
    return rd


def test_every_path_of_a_run_folder(tmp_path):
    # The names are the file format: old run folders are found by them.
    rd = RunDir(tmp_path / "digits-run")
    p = rd.path
    assert rd.name == "digits-run"
    assert (rd.config, rd.metrics, rd.record, rd.skipped_files) == (
        p / "config.yaml", p / "metrics.jsonl", p / "run.json", p / "skipped_files.txt")
    assert (rd.metrics_csv, rd.tensorboard_dir) == (p / "metrics.csv", p / "tensorboard")
    assert rd.checkpoints == p / "checkpoints" and rd.checkpoint(5) == p / "checkpoints" / "epoch-0005"
    assert [rd.weights(part).name for part in ("obfuscator", "heads", "adversaries")] == [
        "obfuscator.safetensors", "heads.safetensors", "adversaries.safetensors"]
    assert rd.eval_dir == p / "eval" and rd.eval_results == p / "eval" / "results.json"
    assert rd.benchmark_stamp == p / "eval" / "benchmark_stamp.json"
    assert rd.attack_dir("inversion") == p / "eval" / "attack-inversion"
    assert rd.export_dir == p / "export"
    with pytest.raises(ValueError, match="unknown part 'encoder'; valid: obfuscator, heads, adversaries"):
        rd.weights("encoder")


def test_a_run_dir_is_a_path_like_value(tmp_path):
    rd = RunDir(str(tmp_path / "r"))
    assert RunDir(rd) == rd and Path(rd) == tmp_path / "r" and os.fspath(rd) == str(tmp_path / "r")
    assert str(rd) == str(tmp_path / "r")
    new = RunDir.new("digits-ours-rn18_3", root=tmp_path)
    assert new.path.parent == tmp_path and re.fullmatch(r"digits-ours-rn18_3-\d{8}-\d{6}", new.name)


def test_is_run_and_is_finished(tmp_path):
    rd = RunDir(tmp_path / "r")
    assert not rd.is_run() and not rd.is_finished()
    _run_folder(rd.path)
    assert rd.is_run() and not rd.is_finished()
    rd.write_record({"status": "finished"})
    assert rd.is_finished()
    rd.drop_record()
    assert not rd.is_finished()
    rd.drop_record()  # nothing to drop: no error


def test_checkpoint_dirs_are_the_complete_ones_oldest_first(tmp_path):
    rd = RunDir(tmp_path)
    assert rd.checkpoint_dirs() == []
    for name in ("epoch-0010", "epoch-0002", ".tmp-epoch-0011"):
        (rd.checkpoints / name).mkdir(parents=True)
    (rd.checkpoints / "epoch-0003").write_text("a file, not a checkpoint")
    assert rd.checkpoint_dirs() == [rd.checkpoint(2), rd.checkpoint(10)]


def test_read_metrics_of_an_absent_file_is_empty(tmp_path):
    assert RunDir(tmp_path).read_metrics() == []


def test_read_metrics_leaves_out_a_torn_last_line(tmp_path):
    rd = RunDir(tmp_path)
    rd.append_metrics({"epoch": 1, "test/task/acc": 0.5})
    rd.append_metrics({"epoch": 2, "test/task/acc": 0.75})
    with open(rd.metrics, "a") as f:
        f.write('{"epoch": 3, "test/ta')  # a trainer killed mid-write
    assert rd.read_metrics() == [{"epoch": 1, "test/task/acc": 0.5}, {"epoch": 2, "test/task/acc": 0.75}]


def test_keep_metrics_through_drops_later_epochs_and_torn_lines_byte_for_byte(tmp_path):
    rd = RunDir(tmp_path)
    kept = ['{"epoch": 1, "x": 0.1000}', '{"epoch":2,"x":NaN}']  # spelled as no json.dumps would
    rd.metrics.write_text("\n".join([*kept, '{"epoch": 3, "x": 1}', "[1]", '{"epoch": 4, "x"']) + "\n")
    rd.keep_metrics_through(2)
    assert rd.metrics.read_text() == "".join(ln + "\n" for ln in kept)
    assert [row["epoch"] for row in rd.read_metrics()] == [1, 2]
    RunDir(tmp_path / "none").keep_metrics_through(1)  # no metrics yet: nothing written
    assert not (tmp_path / "none").exists()


def test_run_record_round_trip(tmp_path):
    record = {"status": "finished", "epochs": 2, "task": {"labels": {"digit": ["0", "1"]}},
              "weights_sha256": {"heads.safetensors": "sha256:ab"}}
    rd = _run_folder(tmp_path / "r", record)
    assert rd.read_record() == record
    assert json.loads(rd.record.read_text()) == record
    assert rd.recorded_digest("heads") == "sha256:ab" and rd.recorded_digest("obfuscator") is None


def test_an_old_run_record_without_digests_is_read(tmp_path):
    rd = _run_folder(tmp_path / "r", {"status": "finished", "epochs": 1})
    assert rd.read_record()["epochs"] == 1 and rd.recorded_digest("heads") is None


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda rd: None, r"is not a privsplit run folder \(no config.yaml\)"),
        (lambda rd: write_text(rd.config, ""),
         r"has no finished training \(no run.json\): finish it with `privsplit train --resume"),
        (lambda rd: _run_folder(rd.path).record.write_text("{not json"), "run.json is not valid JSON"),
        (lambda rd: _run_folder(rd.path, ["finished"]), r"did not finish training \(status None\)"),
        (lambda rd: _run_folder(rd.path, {"status": "training"}), r"did not finish training \(status 'training'\)"),
        (lambda rd: _run_folder(rd.path, {"status": "finished", "weights_sha256": ["sha256:ab"]}),
         "run.json is corrupt \\(weights_sha256 is not a map of file names to digests\\); restore it or train again"),
        (lambda rd: _run_folder(rd.path, {"status": "finished", "weights_sha256": {"heads.safetensors": 1}}),
         "weights_sha256 is not a map"),
    ],
)
def test_run_record_errors_say_what_is_wrong(tmp_path, setup, message):
    rd = RunDir(tmp_path / "r")
    rd.path.mkdir()
    setup(rd)
    with pytest.raises(CheckpointError, match=message):
        rd.read_record()


def test_writers_leave_no_temporary_file(tmp_path):
    write_json(tmp_path / "a.json", {"b": [1, 2]})
    write_text(tmp_path / "a.json", '{"b": 3}')
    append_line(tmp_path / "m.jsonl", "one")
    append_line(tmp_path / "m.jsonl", "two")
    assert json.loads((tmp_path / "a.json").read_text()) == {"b": 3}
    assert (tmp_path / "m.jsonl").read_text() == "one\ntwo\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "m.jsonl"]


def test_a_failed_write_names_the_path_and_the_last_good_checkpoint(tmp_path):
    rd = _run_folder(tmp_path / "r")
    blocked = rd.config / "x.json"  # config.yaml is a file: nothing can be written below it
    with pytest.raises(CheckpointError, match=r"cannot write .*x\.json \(.*\): .*; no checkpoint was written yet$"):
        write_json(blocked, {})
    rd.checkpoint(1).mkdir(parents=True)
    rd.checkpoint(2).mkdir()
    with pytest.raises(CheckpointError, match=f"the last good checkpoint is {re.escape(str(rd.checkpoint(2)))}$"):
        append_line(blocked, "{}")


def test_old_imports_name_the_same_writers():
    from privsplit import rundir
    from privsplit.train import checkpoint

    for name in ("write_json", "write_text", "append_line", "writing", "last_good"):
        assert getattr(checkpoint, name) is getattr(rundir, name)


def test_a_trained_run_folder_is_where_run_dir_says(tiny, tmp_path):
    from privsplit.run import load_run, read_run_record
    from privsplit.train.checkpoint import file_digest
    from privsplit.train.engine import train

    metrics = train(tiny(), tmp_path / "run", progress=False, log=lambda _m: None)
    rd = RunDir(tmp_path / "run")
    assert rd.is_run() and rd.is_finished()
    assert rd.read_metrics() == [metrics] and rd.checkpoint_dirs() == [rd.checkpoint(1)]
    record = rd.read_record()
    assert record == read_run_record(rd.path) and record["metrics"] == metrics
    for part in ("obfuscator", "heads"):
        assert rd.recorded_digest(part) == file_digest(rd.weights(part))
    # A run folder written before digests were recorded still loads.
    old = RunDir(tmp_path / "old")
    shutil.copytree(rd.path, old.path)
    del record["weights_sha256"]
    old.write_record(record)
    assert old.recorded_digest("heads") is None
    assert load_run(old).dir == old.path
