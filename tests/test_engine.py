import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from privsplit.errors import CheckpointError, ConfigError
from privsplit.train.checkpoint import checkpoint_dirs, load_checkpoint, read_weights, save_checkpoint
from privsplit.train.engine import Trainer


def _fixed_batch(trainer, n=32):
    ds = trainer.train_set
    idx = torch.arange(n)
    return ds.images[idx].float() / 255, {k: v[idx] for k, v in ds.labels.items()}


@pytest.mark.slow
def test_training_steps_lower_the_task_loss(tiny, tmp_path):
    trainer = Trainer(tiny("train.flip=false", "reduction=[{op: noise, sigma: 0.5}]"), tmp_path / "run")
    trainer._setup()
    x, y = _fixed_batch(trainer)
    torch.manual_seed(0)
    first = trainer.step(x, y)["train/task_loss"]
    for _ in range(15):
        last = trainer.step(x, y)["train/task_loss"]
    assert last < 0.5 * first


def _grads_after_step(cfg, tmp_path, name):
    trainer = Trainer(cfg, tmp_path / name)
    trainer._setup()
    captured = {}
    original = trainer._sync_and_step

    def capture(names):
        for n in names:
            params = [p for g in trainer.optimizers[n].param_groups for p in g["params"]]
            captured[n] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        original(names)

    trainer._sync_and_step = capture
    x, y = _fixed_batch(trainer)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.step(x, y)
    return trainer, captured, state, (x, y)


@pytest.mark.slow
def test_obfuscator_is_pushed_against_the_adversary(tiny, tmp_path):
    """The adversary term's gradient on the obfuscator is -lam times the
    gradient of the adversary's own loss: opposite directions."""
    lam = 0.5
    base = ["train.flip=false", "reduction=[]", "adversaries=[{name: adv, kind: attribute, target: private}]"]
    _, with_adv, _, _ = _grads_after_step(tiny(*base, f"train.lam={lam}"), tmp_path, "a")
    trainer, task_only, state, (x, y) = _grads_after_step(tiny(*base, "train.lam=0"), tmp_path, "b")

    # Gradient of the adversary's own loss w.r.t. the obfuscator, from the same start.
    trainer.model.load_state_dict(state)
    trainer.model.train()
    z = trainer.model.obfuscator(x)
    adv_loss = torch.nn.functional.cross_entropy(trainer.model.adversaries["adv"](z), y["private"])
    own = torch.autograd.grad(adv_loss, list(trainer.model.obfuscator.parameters()))

    term = torch.cat([(a - b).flatten() for a, b in zip(with_adv["obfuscator"], task_only["obfuscator"])])
    own = torch.cat([g.flatten() for g in own])
    cos = torch.nn.functional.cosine_similarity(term, own, dim=0)
    assert cos < -0.999
    assert torch.allclose(term, -lam * own, atol=1e-5, rtol=1e-3)
    # The adversary itself descends its own loss (on a detached z).
    assert any(g.abs().sum() > 0 for g in with_adv["adversaries"])


@pytest.mark.slow
def test_adversary_does_not_train_the_obfuscator_when_lam_is_zero(tiny, tmp_path):
    base = ["train.flip=false", "reduction=[]", "adversaries=[{name: dec, kind: decoder}]"]
    _, with_adv, _, _ = _grads_after_step(tiny(*base, "train.lam=0"), tmp_path, "a")
    _, no_adv, _, _ = _grads_after_step(tiny("train.flip=false", "reduction=[]"), tmp_path, "b")
    for a, b in zip(with_adv["obfuscator"], no_adv["obfuscator"]):
        assert torch.allclose(a, b)


@pytest.mark.slow
def test_checkpoint_round_trip(tiny, tmp_path):
    trainer = Trainer(tiny("adversaries=[{name: adv}]"), tmp_path / "run")
    trainer._setup()
    x, y = _fixed_batch(trainer)
    trainer.step(x, y)
    save_checkpoint(tmp_path / "ck", trainer.model, trainer.optimizers, {"epoch": 1})
    other = Trainer(tiny("adversaries=[{name: adv}]", "train.seed=5"), tmp_path / "run2")
    other._setup()
    meta = load_checkpoint(tmp_path / "ck", other.model, other.optimizers)
    assert meta["epoch"] == 1
    for (k, a), b in zip(trainer.model.state_dict().items(), other.model.state_dict().values()):
        assert torch.equal(a, b), k
    sa, sb = trainer.optimizers["obfuscator"].state_dict(), other.optimizers["obfuscator"].state_dict()
    assert all(torch.equal(sa["state"][i]["exp_avg"], sb["state"][i]["exp_avg"]) for i in sa["state"])
    # Both continue identically.
    torch.manual_seed(1)
    la = trainer.step(x, y)
    torch.manual_seed(1)
    lb = other.step(x, y)
    assert la == lb


def test_foreign_and_corrupt_checkpoints_are_refused(tiny, tmp_path):
    trainer = Trainer(tiny(), tmp_path / "run")
    trainer._setup()
    save_checkpoint(tmp_path / "ck", trainer.model, trainer.optimizers, {"epoch": 1})
    wider = Trainer(tiny("model.split=rn18_2"), tmp_path / "run2")
    wider._setup()
    with pytest.raises(CheckpointError, match="does not match this model"):
        load_checkpoint(tmp_path / "ck", wider.model)
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors is damaged or was replaced"):  # meta.json's digest
        load_checkpoint(tmp_path / "ck", trainer.model)
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    del meta["sha256"]  # as written before digests were recorded
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(tmp_path / "ck", trainer.model)
    (tmp_path / "ck" / "meta.json").write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="not a privsplit checkpoint"):
        load_checkpoint(tmp_path / "ck", trainer.model)


def test_run_folder_is_not_overwritten(tiny, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        Trainer(tiny(), tmp_path / "run").fit()
    with pytest.raises(CheckpointError, match="nothing to resume"):
        Trainer(tiny(), tmp_path / "elsewhere", resume=True).fit()


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(tiny, tmp_path):
    straight = tmp_path / "straight"
    Trainer(tiny("train.epochs=2"), straight, progress=False).fit()
    split = tmp_path / "split"
    Trainer(tiny("train.epochs=1"), split, progress=False).fit()
    Trainer(tiny("train.epochs=2"), split, resume=True, progress=False).fit()
    a = read_weights(straight / "obfuscator.safetensors")
    b = read_weights(split / "obfuscator.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [json.loads(l) for l in (split / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    assert json.loads((split / "run.json").read_text())["status"] == "finished"


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_and_finishes(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "privsplit", "train", "--out", str(run), "--no-progress",
            "--set", "data.image_size=16", "--set", "data.limit_test=32", "--set", "train.batch_size=16",
            "--set", "train.epochs=3", "--set", "train.threads=1"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    while not (run / "checkpoints" / "epoch-0001").exists():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # well into epoch 2 (an epoch takes several seconds)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "run.json").exists()
    done = [p.name for p in checkpoint_dirs(run)]
    assert done and "epoch-0003" not in done

    out = subprocess.run([sys.executable, "-m", "privsplit", "train", "--resume", str(run), "--no-progress",
                          "--no-privacy-check"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"resuming {run} after epoch" in out.stdout
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert [p.name for p in checkpoint_dirs(run)] == ["epoch-0002", "epoch-0003"]


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "-m", "privsplit", "train", "--out", str(run), "--no-progress",
         "--set", "data.image_size=16", "--set", "data.limit_train=128", "--set", "data.limit_test=64",
         "--set", "train.batch_size=16", "--set", "train.epochs=2",
         "--set", "adversaries=[{name: adv}]"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    info = json.loads((run / "run.json").read_text())
    assert info["world_size"] == 2 and info["status"] == "finished"
    assert out.stdout.count("finished: ours on digits") == 1  # only rank 0 reports
    # Each process saw half of every epoch: 128 / 2 / 16 = 4 steps per epoch.
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_adversary_on_the_noise_free_features_pushes_the_encoder(tiny, tmp_path):
    """``queries: inf`` makes the adversary read the noise-free features: its term's
    gradient on the obfuscator is that of the entropy objective on reduce_silenced(encode(x))."""
    lam = 0.5
    base = ["train.flip=false", "reduction=[{op: noise, sigma: 4}]",
            "adversaries=[{name: clean, kind: attribute, target: private, queries: inf, objective: entropy}]"]
    _, with_adv, _, _ = _grads_after_step(tiny(*base, f"train.lam={lam}"), tmp_path, "a")
    trainer, task_only, state, (x, y) = _grads_after_step(tiny(*base, "train.lam=0"), tmp_path, "b")
    trainer.model.load_state_dict(state)
    trainer.model.train()
    obf = trainer.model.obfuscator
    clean = obf.reduce_silenced(obf.encode(x))  # no noise: a deterministic function of x
    views = trainer._adversary_views(obf.encode(x), obf.reduce(obf.encode(x)))
    assert torch.allclose(views["clean"], clean)
    from privsplit.methods.base import kl_to_uniform

    own = torch.autograd.grad(kl_to_uniform(trainer.model.adversaries["clean"](clean)), list(obf.parameters()))
    term = torch.cat([(a - b).flatten() for a, b in zip(with_adv["obfuscator"], task_only["obfuscator"])])
    own = torch.cat([g.flatten() for g in own])
    assert torch.allclose(term, lam * own, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("adv,message", [
    ("{name: a, queries: 0}", "queries must be a whole number >= 1 or inf"),
    ("{name: a, queries: many}", "queries must be a whole number >= 1 or inf"),
    ("{name: a, objective: fool}", "objective must be one of ce, entropy"),
    ("{name: a, kind: decoder, objective: entropy}", "entropy only for kind attribute"),
])
def test_bad_adversary_settings_are_refused(tiny, tmp_path, adv, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(tiny(f"adversaries=[{adv}]"), tmp_path / "run").fit()
