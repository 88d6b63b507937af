import pytest
import torch

import math

from privsplit.attacks import ATTACKS, FAMILIES, FAMILY_NAMES, AttackOptions, EvalData, knn_attack, parse_queries, train_attacker
from privsplit.attacks.base import attacker_converged, averaged_z, leak_threshold, still_falling
from privsplit.obfuscator import Obfuscator
from privsplit.reduction import Reduction
from privsplit.config import Config, apply_overrides
from privsplit.data.base import TaskInfo
from privsplit.errors import ConfigError
from privsplit.metrics import chance_given


def test_registry_lists_attacks_and_rejects_unknown():
    assert ATTACKS.names() == ["attribute", "inversion", "model_space", "reconstruction"]
    with pytest.raises(ConfigError, match="valid choices: attribute, inversion, model_space, reconstruction"):
        ATTACKS.get("membership")


def test_overfitting_is_not_under_training():
    # Loss still falling, but the test accuracy peaked at epoch 2: more epochs cannot raise the best.
    assert attacker_converged([1.0, 0.5, 0.2], [0.30, 0.35, 0.33], 0.01)
    # Loss falling and test accuracy still rising at the last epoch: under-trained.
    assert not attacker_converged([1.0, 0.5, 0.2], [0.30, 0.33, 0.35], 0.01)
    assert attacker_converged([1.0, 0.6, 0.6], [0.30, 0.33, 0.35], 0.01)


def test_still_falling():
    assert still_falling([1.0], 0.01)  # one epoch shows nothing
    assert still_falling([1.0, 0.8, 0.6], 0.01)
    assert not still_falling([1.0, 0.6, 0.6], 0.01)
    assert not still_falling([1.0, 0.6, 0.61], 0.01)
    assert not still_falling([0.2, 0.04, 0.02], 0.01)  # fitted the training split
    assert still_falling([0.2, 0.04, 0.02], 0.01, fitted=0.0)


def test_leak_threshold_grows_with_fewer_samples():
    assert leak_threshold(0.1, 100) > leak_threshold(0.1, 10000) >= 0.11


def client(shape, chain=()):
    """A real client part whose encoder is the identity: the given features go through ``chain``."""
    return Obfuscator(torch.nn.Identity(), Reduction.from_config(list(chain)), shape, allow_no_noise=True).eval()


def _data(cfg: Config, z_train, z_test, y_train, y_test, k: int, chain=(), consistent=False) -> EvalData:
    info = TaskInfo("synthetic", {"utility": ["a", "b"], "private": [str(i) for i in range(k)]}, (3, 16, 16))
    return EvalData(cfg, info, client(tuple(z_train.shape[1:]), chain), z_train, z_test,
                    {"private": y_train, "utility": y_train % 2}, {"private": y_test, "utility": y_test % 2},
                    consistent=consistent)


QUIET = {"progress": False, "log": lambda s: None}


def test_averaging_k_draws_of_a_noise_only_chain_shrinks_the_noise_by_sqrt_k():
    sigma = 2.0
    obf = client((64,), [{"op": "noise", "sigma": sigma, "normalize": "none"}])
    e = torch.randn(4000, 64, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    for k in (1, 4, 16):
        noise = averaged_z(obf, e, k) - e
        assert noise.std().item() == pytest.approx(sigma / math.sqrt(k), rel=0.02), k
        assert abs(noise.mean().item()) < 0.01
    assert torch.equal(averaged_z(obf, e, math.inf), e), "inf is the noise-free limit"


def test_parse_queries():
    assert parse_queries("16,1,inf") == (1, 16, math.inf)
    assert parse_queries("4") == (1, 4), "the one-query headline is always measured"
    assert parse_queries(["inf", 4, 4]) == (1, 4, math.inf)
    for bad in ("0", "-1", "two", "1.5", "", "1,,nan"):
        with pytest.raises(ConfigError, match="queries"):
            parse_queries(bad)


def _label_in_noise(n, sigma=6.0, seed=0):
    """Features that hold the 4-class label weakly, under noise added by the client."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    e = torch.randn(n, 512, generator=g) * 0.3  # rn18_4: z is a 512-vector
    e[:, :4] += torch.nn.functional.one_hot(y, 4).float()
    return e, y, [{"op": "noise", "sigma": sigma, "normalize": "none"}]


@pytest.mark.slow
def test_repeated_queries_reveal_more_and_results_hold_every_key():
    e, y, chain = _label_in_noise(1600)
    cfg = apply_overrides(Config(), ["model.split=rn18_4"])  # z is a vector: the head is a linear layer
    data = _data(cfg, e[:1200], e[1200:], y[:1200], y[1200:], 4, chain)
    r = ATTACKS.create("attribute").run(data, AttackOptions(epochs=4, queries=(1, 4, 16, math.inf), **QUIET))
    acc = {q: v["accuracy"] for q, v in r["by_queries"].items()}
    assert list(acc) == ["1", "4", "16", "inf"] and r["accuracy"] == acc["1"]
    assert set(r["by_queries"]["16"]["families"]) == set(FAMILY_NAMES)
    # More queries, less noise: monotone up to attacker noise (400 test samples: ~2.5 points).
    assert acc["1"] - 0.03 <= acc["4"] and acc["4"] - 0.03 <= acc["16"] and acc["16"] - 0.03 <= acc["inf"]
    assert acc["inf"] > acc["1"] + 0.2, acc
    assert "mean of k independent draws" in r["queries_note"]
    # With consistent randomness a repeated query sends the same z: every k is the one-query figure.
    same = ATTACKS.create("attribute").run(_data(cfg, e[:1200], e[1200:], y[:1200], y[1200:], 4, chain, consistent=True),
                                          AttackOptions(epochs=1, families=("knn",), queries=(1, 16, math.inf), **QUIET))
    assert same["by_queries"]["16"] == same["by_queries"]["inf"] == same["by_queries"]["1"]
    assert "consistent randomness" in same["queries_note"]


def test_attackers_owning_the_obfuscator_draw_fresh_randomness():
    e, y, chain = _label_in_noise(200)
    data = _data(Config(), e[:100], e[100:], y[:100], y[100:], 4, chain)
    idx = torch.arange(10)
    torch.manual_seed(0)
    a, b = data.z_train(idx, 1, fresh=True), data.z_train(idx, 1, fresh=True)
    assert not torch.equal(a, b)
    assert torch.equal(data.z_train(idx, 1, fresh=False), data.z_train(idx, 1, fresh=False))
    assert torch.equal(data.z_test(16), data.z_test(16)), "test draws are fixed (seeded)"
    # A client with consistent randomness sends one z per image, but the attacker, who owns
    # the obfuscator, still trains on fresh draws of its own.
    keyed = _data(Config(), e[:100], e[100:], y[:100], y[100:], 4, chain, consistent=True)
    assert torch.equal(keyed.z_test(16), keyed.z_test(1))
    assert not torch.equal(keyed.z_train(idx, 16, fresh=True), keyed.z_train(idx, 16, fresh=True))


def test_deterministic_client_computes_once():
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(300, 32, generator=g), torch.randint(0, 2, (300,), generator=g)
    cfg = apply_overrides(Config(), ["model.split=rn18_4"])
    logs = []
    r = ATTACKS.create("attribute").run(_data(cfg, z[:200], z[200:], y[:200], y[200:], 2),
                                        AttackOptions(epochs=1, families=("mlp",), queries=(1, 16, math.inf),
                                                      progress=False, log=logs.append))
    assert len(logs) == 1, "one attacker for all numbers of queries"
    assert r["by_queries"]["1"] is r["by_queries"]["16"] is r["by_queries"]["inf"]
    assert "deterministic" in r["queries_note"]


def test_knn_learns_a_label_written_in_z():
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 3, (500,), generator=g)
    z = torch.randn(500, 16, 3, 3, generator=g)
    z[:, 0] += 4 * y.view(-1, 1, 1)
    r = knn_attack(z[:400], y[:400], z[400:], y[400:], 3)
    assert r["best_acc"] > 0.75 and r["ks"] == [1, 5, 25, 100] and r["converged"]
    noise = knn_attack(torch.randn(400, 16), y[:400], torch.randn(100, 16), y[400:], 3)
    assert noise["best_acc"] < 0.5


@pytest.mark.slow
def test_attacker_on_pure_random_z_stays_at_chance():
    g = torch.Generator().manual_seed(0)
    cfg = apply_overrides(Config(), ["model.split=rn18_4"])  # z is a 512-vector: fast attackers
    z_train, z_test = torch.randn(800, 512, generator=g), torch.randn(1000, 512, generator=g)
    y_train, y_test = torch.randint(0, 4, (800,), generator=g), torch.randint(0, 4, (1000,), generator=g)
    r = ATTACKS.create("attribute").run(_data(cfg, z_train, z_test, y_train, y_test, 4),
                                        AttackOptions(epochs=3, progress=False, log=lambda s: None))
    assert set(r["families"]) == set(FAMILY_NAMES)
    assert r["verdict"] == "at chance", r
    assert r["accuracy"] <= r["leak_threshold"]
    # utility = private % 2: knowing it halves the 4 classes to 2
    assert r["chance_given"] == {"utility": pytest.approx(chance_given(y_test, y_test % 2))}
    assert r["chance_given"]["utility"] > r["chance"]


@pytest.mark.slow
def test_attacker_learns_a_label_written_in_z():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (600,), generator=g)
    z = torch.randn(600, 512, generator=g)
    z[:, :4] += 5 * torch.nn.functional.one_hot(y, 4)  # the label is plainly in z
    cfg = apply_overrides(Config(), ["model.split=rn18_4"])  # z is a vector: the head is the linear layer
    data = _data(cfg, z[:400], z[400:], y[:400], y[400:], 4)
    r = ATTACKS.create("attribute").run(data, AttackOptions(epochs=8, progress=False, log=lambda s: None))
    assert r["verdict"] == "leaks" and r["accuracy"] > 0.9
    for fam in FAMILIES:
        f = r["families"][fam]
        assert len(f["test_acc"]) == len(f["train_loss"]) == 8 and f["best_acc"] == max(f["test_acc"])


def test_unknown_family_is_an_error():
    cfg = Config()
    data = _data(cfg, torch.randn(8, 256, 2, 2), torch.randn(4, 256, 2, 2), torch.zeros(8, dtype=torch.long),
                 torch.zeros(4, dtype=torch.long), 2)
    with pytest.raises(ConfigError, match="valid choices: head, mlp, knn"):
        ATTACKS.create("attribute").run(data, AttackOptions(families=("cnn",), progress=False))


@pytest.mark.slow
def test_attacker_on_unnoised_real_cifar10_is_far_above_chance(cifar_root):
    """Random-init ResNet18 features without noise already carry the class."""
    from privsplit.data import DataConfig, load_dataset
    from privsplit.evaluate import EvalOptions, encode
    from privsplit.models import split_backbone
    from privsplit.obfuscator import Obfuscator
    from privsplit.reduction import Reduction

    train, test, info = load_dataset(DataConfig(name="cifar10", root=str(cifar_root), limit_train=3000, limit_test=1000))
    torch.manual_seed(0)
    enc, _ = split_backbone("resnet18", "rn18_2", num_classes=2)
    obf = Obfuscator(enc, Reduction.from_config([]), info.image_shape, allow_no_noise=True).eval()
    opts = EvalOptions(progress=False)
    z_tr, y_tr, _ = encode(obf, train, opts, keep_images=False)
    z_te, y_te, _ = encode(obf, test, opts, keep_images=False)
    cfg = apply_overrides(Config(), ["data.name=cifar10", "model.split=rn18_2"])
    data = EvalData(cfg, info, obf, z_tr, z_te, y_tr, y_te)
    r = ATTACKS.create("attribute").run(data, AttackOptions(epochs=3, families=("mlp",), progress=False, log=lambda s: None))
    assert r["chance"] < 0.15
    assert r["accuracy"] > 0.3 and r["verdict"] == "leaks", r["families"]["mlp"]["test_acc"]


def test_train_attacker_reports_convergence():
    g = torch.Generator().manual_seed(2)
    z, y = torch.randn(64, 8, generator=g), torch.randint(0, 2, (64,), generator=g)
    r = train_attacker(torch.nn.Linear(8, 2), z, y, z, y, AttackOptions(epochs=1, progress=False))
    assert r["converged"] is False and r["best_epoch"] == 1


def _smooth_images(n, seed):
    """(n, 3, 16, 16) uint8 images made of 4x4 random blocks: far from their mean."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return (torch.nn.functional.interpolate(low, size=(16, 16), mode="nearest") * 255).round().to(torch.uint8)


@pytest.mark.parametrize("scale", [1.0, 300.0])
@pytest.mark.slow
def test_reconstruction_decoder_rebuilds_images_written_in_z_at_any_scale(scale, tmp_path):
    x = _smooth_images(500, 0)
    z = x.float() / 255 * scale  # the image itself, at a scale far from the decoder's own
    data = _data(Config(), z[:400], z[400:], torch.zeros(400, dtype=torch.long), torch.zeros(100, dtype=torch.long), 2)
    data.x_train, data.x_test = x[:400], x[400:]
    r = ATTACKS.create("reconstruction").run(data, AttackOptions(epochs=6, batch_size=32, out_dir=tmp_path, **QUIET))
    m, base = r["metrics"], r["mean_image_baseline"]
    assert r["verdict"] == "reconstructs" and m["ssim"] > base["ssim"] + 0.3 and m["mse"] < base["mse"] / 4, (m, base)
    # Scored at the epoch with the lowest test error, which is reported.
    assert len(r["test_mse"]) == 6 and r["best_epoch"] == 1 + r["test_mse"].index(min(r["test_mse"]))
    assert m["mse"] == pytest.approx(min(r["test_mse"]) * 255**2, rel=1e-3)
    assert (tmp_path / "reconstruction.png").is_file()


@pytest.mark.slow
def test_reconstruction_from_noise_is_no_better_than_the_mean_image():
    x = _smooth_images(500, 1)
    z = torch.randn(500, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    data = _data(Config(), z[:400], z[400:], torch.zeros(400, dtype=torch.long), torch.zeros(100, dtype=torch.long), 2)
    data.x_train, data.x_test = x[:400], x[400:]
    r = ATTACKS.create("reconstruction").run(data, AttackOptions(epochs=4, batch_size=32, **QUIET))
    assert r["verdict"] == "no better than the mean image", (r["metrics"], r["mean_image_baseline"])
