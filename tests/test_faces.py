"""Real faces: a tiny UTKFace run at the paper's 178 px, trained and attacked end to end."""

import math

import pytest

from privsplit.attacks import AttackOptions
from privsplit.evaluate import EvalOptions, evaluate_run
from privsplit.train.engine import Trainer


@pytest.mark.slow
def test_tiny_utkface_run_at_178px_has_every_reconstruction_metric(utkface_root, tiny, tmp_path):
    cfg = tiny("data.name=utkface", f"data.root={utkface_root}", "data.image_size=178", "data.limit_train=48",
               "data.limit_test=24", "train.batch_size=16")
    run = tmp_path / "run"
    metrics = Trainer(cfg, run, progress=False).fit()
    assert 0 <= metrics["test/task/acc"] <= 1
    options = EvalOptions(attacks=("attribute", "reconstruction"), latency_repeats=0,
                          attack=AttackOptions(epochs=1, batch_size=16, families=("mlp",), queries=(1,)))
    r = evaluate_run(run, options, tmp_path / "eval")
    assert r["dataset"] == "utkface" and r["labels"]["private"] == ["White", "Black", "Asian", "Indian", "Others"]
    m = r["attacks"]["reconstruction"]["metrics"]
    assert r["image_shape"] == [3, 178, 178]
    for key in ("mse", "l1", "ssim", "ms_ssim", "psnr", "st_lpips"):
        assert isinstance(m[key], float) and math.isfinite(m[key]), key
    assert m["lpips"] is None and "unavailable" in m["notes"]["lpips"]  # no ImageNet weights here: never a fake number
    assert (tmp_path / "eval" / "reconstruction.png").is_file()
