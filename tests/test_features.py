"""Privacy in the features: the attacker families that read unpooled z, and the
levers of ``ours`` that act on the noise-free features (bottleneck, dependence,
centre, proxy families, resets, adversary steps, validation split)."""

import math

import pytest
import torch
from torch import nn

from privsplit.attacks import ATTACKS, AttackOptions, train_attacker
from privsplit.config import Config, apply_overrides
from privsplit.data.base import LabeledImages, TaskInfo
from privsplit.errors import ConfigError, TrainingDiverged
from privsplit.methods import SplitModel, build_method
from privsplit.metrics.dependence import conditional_dcor, distance_correlation_sqr, within_class_share
from privsplit.models.probes import PROBES, FlatProbe, build_probe
from privsplit.obfuscator import Obfuscator
from privsplit.reduction import Reduction
from privsplit.train.engine import Trainer

from test_attacks import QUIET, _data

dcor = pytest.importorskip("dcor")


# The dependence estimator against the reference implementation -----------------------------------


@pytest.mark.parametrize("n, p, q, seed", [(40, 3, 1, 0), (64, 10, 4, 1), (25, 1, 6, 2)])
def test_distance_correlation_agrees_with_the_dcor_package(n, p, q, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = x[:, :1] ** 2 + 0.5 * torch.randn(n, q, generator=g, dtype=torch.float64)  # dependent, not linearly
    ours = float(distance_correlation_sqr(x, y))
    ref = float(dcor.distance_correlation_sqr(x.numpy(), y.numpy()))
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-6)
    indep = torch.randn(n, q, generator=g, dtype=torch.float64)
    assert float(distance_correlation_sqr(x, indep)) == pytest.approx(
        float(dcor.distance_correlation_sqr(x.numpy(), indep.numpy())), rel=1e-5, abs=1e-6)


def test_distance_correlation_of_a_one_hot_label_matches_dcor():
    g = torch.Generator().manual_seed(3)
    y = torch.randint(0, 5, (50,), generator=g)
    f = torch.randn(50, 6, generator=g) + y[:, None].float()
    onehot = nn.functional.one_hot(y, 5).double()
    ref = dcor.distance_correlation_sqr(f.double().numpy(), onehot.numpy())
    assert float(conditional_dcor(f, y, None, 5)) == pytest.approx(ref, rel=1e-4)


def test_conditional_dcor_ignores_what_the_condition_explains():
    """Features that carry only the utility label, and a private label that is a
    function of it plus chance: no dependence is left within the utility groups."""
    g = torch.Generator().manual_seed(0)
    u = torch.randint(0, 2, (200,), generator=g)
    p = 2 * u + torch.randint(0, 2, (200,), generator=g)  # 4 classes; its parity is chance
    only_u = u[:, None].float() + 0.01 * torch.randn(200, 4, generator=g)
    both = torch.cat([only_u, p[:, None].float()], 1)
    assert float(conditional_dcor(only_u, p, None, 4)) > 0.3  # unconditionally dependent
    assert float(conditional_dcor(only_u, p, u, 4)) < 0.1  # the V-statistic's small-sample floor
    assert float(conditional_dcor(both, p, u, 4)) > 0.3


def test_within_class_share():
    y = torch.tensor([0, 0, 1, 1])
    assert float(within_class_share(torch.tensor([[0.0], [0.0], [1.0], [1.0]]), y)) == 0
    assert float(within_class_share(torch.tensor([[0.0], [1.0], [0.0], [1.0]]), y)) == pytest.approx(1)


# Attacker families ---------------------------------------------------------------------------------


def test_every_probe_family_is_an_attacker_and_a_proxy_family():
    from privsplit.attacks import FAMILY_NAMES
    from privsplit.config import ADVERSARY_FAMILIES

    assert set(PROBES.names()) | {"head", "knn"} == set(FAMILY_NAMES)
    assert set(PROBES.names()) | {"head"} == set(ADVERSARY_FAMILIES)
    assert AttackOptions().families == FAMILY_NAMES  # every family by default
    for fam in PROBES.names():
        for shape in [(8, 4, 4), (32,)]:
            out = build_probe(fam, shape, 3).train()(torch.randn(5, *shape))
            assert out.shape == (5, 3) and torch.isfinite(out).all()


def test_unpooled_families_read_what_pooling_averages_away():
    """The label sits in the sign of a +a/-a pattern of neighbouring positions:
    pooling (the mlp family) cancels it, a linear probe on unpooled z reads it."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (800,), generator=g)
    z = 0.3 * torch.randn(800, 2, 8, 8, generator=g)
    sign = (2 * y - 1).float().view(-1, 1, 1)
    z[:, 0, :, 0::2] += sign  # +s in even columns, -s in odd: every 2x2 mean is unchanged
    z[:, 0, :, 1::2] -= sign
    data = _data(Config(), z[:600], z[600:], y[:600], y[600:], 2)
    r = ATTACKS.create("attribute").run(data, AttackOptions(epochs=4, families=("mlp", "linear", "mlp_flat"),
                                                            queries=(1,), **QUIET))
    fams = r["families"]
    assert fams["mlp"]["best_acc"] < 0.65
    assert fams["linear"]["best_acc"] > 0.95 and fams["mlp_flat"]["best_acc"] > 0.95
    assert r["best_family"] in ("linear", "mlp_flat")


def test_linear_probe_is_scale_free():
    """A z scaled by 1e4 hides nothing from a standardising probe."""
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (600,), generator=g)
    z = torch.randn(600, 16, generator=g)
    z[:, 0] += 2 * y.float()
    accs = []
    for scale in (1.0, 1e4):
        torch.manual_seed(0)
        r = train_attacker(FlatProbe((16,), 3), z[:400] * scale, y[:400], z[400:] * scale, y[400:],
                           AttackOptions(epochs=20, batch_size=32, **QUIET))
        accs.append(r["best_acc"])
    assert accs[0] > 0.7 and abs(accs[0] - accs[1]) < 0.05


# Levers: each changes the encoder's gradient, and only when enabled ----------------------------------


def _encoder_grads(cfg, tmp_path, name, steps=1):
    trainer = Trainer(cfg, tmp_path / name)
    trainer._setup()
    ds = trainer.train_set
    idx = torch.arange(32)
    x, y = ds.images[idx].float() / 255, {k: v[idx] for k, v in ds.labels.items()}
    captured = {}
    original = trainer._sync_and_step

    def capture(names):
        if "obfuscator" in names and "obfuscator" not in captured:
            captured["obfuscator"] = [p.grad.clone() for p in trainer.model.obfuscator.parameters() if p.grad is not None]
        original(names)

    trainer._sync_and_step = capture
    torch.manual_seed(0)
    losses = trainer.step(x, y)
    return captured["obfuscator"], losses


@pytest.mark.parametrize("lever", ["method_args.dependence=1", "method_args.centre=1"])
@pytest.mark.slow
def test_a_feature_lever_changes_the_encoder_gradient_only_when_enabled(tiny, tmp_path, lever):
    base = ["train.flip=false", "train.lam=0"]
    off, off_losses = _encoder_grads(tiny(*base), tmp_path, "off")
    zero, _ = _encoder_grads(tiny(*base, lever.replace("=1", "=0")), tmp_path, "zero")
    on, on_losses = _encoder_grads(tiny(*base, lever), tmp_path, "on")
    name = lever.split(".")[1].split("=")[0]
    assert f"train/{name}" in on_losses and f"train/{name}" not in off_losses
    assert all(torch.equal(a, b) for a, b in zip(off, zero))  # weight 0: exactly the task-only gradient
    assert any(not torch.allclose(a, b) for a, b in zip(off, on))


@pytest.mark.slow
def test_an_adversary_family_and_steps_change_the_encoder_gradient(tiny, tmp_path):
    adv = "adversaries=[{name: a, family: linear, queries: inf, objective: entropy}]"
    base = ["train.flip=false", "train.lam=0.5"]
    head, _ = _encoder_grads(tiny(*base, "adversaries=[{name: a, queries: inf, objective: entropy}]"), tmp_path, "head")
    linear, _ = _encoder_grads(tiny(*base, adv), tmp_path, "linear")
    assert any(not torch.allclose(a, b) for a, b in zip(head, linear))
    trainer = Trainer(tiny(*base, adv), tmp_path / "built")
    trainer._setup()
    assert isinstance(trainer.model.adversaries["a"], FlatProbe)


@pytest.mark.slow
def test_adversary_steps_train_the_proxy_more_per_batch(tiny, tmp_path):
    adv = "adversaries=[{name: a, family: linear}]"
    moved = []
    for steps in (1, 3):
        trainer = Trainer(tiny("train.flip=false", "train.lam=0.1", adv, f"train.adversary_steps={steps}"), tmp_path / f"s{steps}")
        trainer._setup()
        before = [p.detach().clone() for p in trainer.model.adversaries.parameters()]
        ds = trainer.train_set
        idx = torch.arange(32)
        torch.manual_seed(0)
        trainer.step(ds.images[idx].float() / 255, {k: v[idx] for k, v in ds.labels.items()})
        moved.append(sum(float((p.detach() - b).abs().sum()) for p, b in zip(trainer.model.adversaries.parameters(), before)))
    assert moved[1] > 2 * moved[0]


def test_reset_every_reinitialises_the_adversary_on_schedule(tiny, tmp_path):
    trainer = Trainer(tiny("adversaries=[{name: a, family: linear, reset_every: 2}]", "train.lam=0.1"), tmp_path / "r")
    trainer._setup()
    adv = trainer.model.adversaries["a"]
    with torch.no_grad():
        for p in adv.parameters():
            p.fill_(7.0)
    trainer._reset_adversaries(2)  # epoch 2 is not 1 + a multiple of 2
    assert all(bool((p == 7).all()) for p in adv.parameters())
    trainer._reset_adversaries(3)
    assert not any(bool((p == 7).any()) for p in adv.parameters())
    again = [p.clone() for p in adv.parameters()]
    trainer._reset_adversaries(3)  # seeded by (seed, epoch): the same fresh weights
    assert all(torch.equal(a, b) for a, b in zip(again, adv.parameters()))


@pytest.mark.slow
def test_bottleneck_shrinks_z_and_the_server_reads_it(tiny, tmp_path):
    from privsplit.data.base import load_dataset

    for split, z_shape in [("rn18_3", (16, 1, 1)), ("rn18_4", (16,))]:
        cfg = tiny(f"model.split={split}", "method_args.bottleneck=16")
        _, _, info = load_dataset(cfg.data)
        model = build_method(cfg).build(info)
        assert model.obfuscator.z_shape == z_shape
        out = model(torch.rand(4, 3, 16, 16))["task"]
        assert out.shape == (4, 2)
        server = build_method(cfg).server_head(info, 2).eval()
        assert server(torch.randn(4, *z_shape)).shape == (4, 2)
    plain = build_method(tiny()).build(info)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.in_channels == 256
                   for m in plain.obfuscator.modules())


@pytest.mark.slow
def test_bottleneck_run_trains_evaluates_and_reports_fewer_bytes(tiny, tmp_path):
    from privsplit.evaluate import EvalOptions, evaluate_run

    Trainer(tiny("method_args.bottleneck=8", "adversaries=[{name: lin, family: linear, queries: inf}]",
                 "train.lam=0.1"), tmp_path / "run", progress=False, log=lambda s: None).fit()
    res = evaluate_run(tmp_path / "run", EvalOptions(attacks=("attribute",), latency_repeats=0, progress=False,
                                                      log=lambda s: None,
                                                      attack=AttackOptions(epochs=1, queries=(1, math.inf))),
                       tmp_path / "eval")
    assert res["z_shape"] == [8, 1, 1] and res["cost"]["bytes_per_sample_float32"] < 256 * 4
    gap = res["proxy_gap"]
    assert [g["adversary"] for g in gap] == ["lin"] and gap[0]["queries"] == "inf" and gap[0]["family"] == "linear"
    assert gap[0]["fresh"] == res["attacks"]["attribute"]["by_queries"]["inf"]["accuracy"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Proxy adversaries against fresh attackers" in report and "`lin`" in report


# A planted private feature: the dependence lever removes it, the task stays solved ---------------


class _Linear(Obfuscator):
    """A client whose encoder is one linear layer on the 12 pixels of a 3x2x2 image."""

    def __init__(self) -> None:
        enc = nn.Sequential(nn.Flatten(1), nn.Linear(12, 8))
        super().__init__(enc, Reduction.from_config([]), (3, 2, 2), allow_no_noise=True)


def _planted(n, seed):
    """Utility in pixel 0, an independent private bit in pixel 1, noise elsewhere."""
    g = torch.Generator().manual_seed(seed)
    u, p = torch.randint(0, 2, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    x = 0.5 + 0.05 * torch.randn(n, 12, generator=g)
    x[:, 0] += 0.3 * (2 * u - 1)
    x[:, 1] += 0.3 * (2 * p - 1)
    images = (x.clamp(0, 1) * 255).round().to(torch.uint8).view(n, 3, 2, 2)
    return LabeledImages({"utility": u, "private": p}, images=images)


def _private_probe_accuracy(weight, tmp_path):
    info = TaskInfo("planted", {"utility": ["a", "b"], "private": ["c", "d"]}, (3, 2, 2))
    train_set, test_set = _planted(1024, 0), _planted(512, 1)
    cfg = apply_overrides(Config(), ["reduction=[]", "train.flip=false", "train.epochs=8", "train.batch_size=64",
                                     "train.lam=0", f"method_args.dependence={weight}", "train.lr_obfuscator=3e-3"])
    torch.manual_seed(0)
    model = SplitModel(_Linear(), {"task": nn.Linear(8, 2)}, {"task": "utility"})
    metrics = Trainer(cfg, tmp_path / f"w{weight}", data=(train_set, test_set, info), model=model,
                      progress=False, log=lambda s: None).fit()
    with torch.no_grad():
        model.eval()
        f_train = model.obfuscator.encode(train_set.images.float() / 255)
        f_test = model.obfuscator.encode(test_set.images.float() / 255)
    torch.manual_seed(0)
    r = train_attacker(FlatProbe((8,), 2), f_train, train_set.labels["private"], f_test, test_set.labels["private"],
                       AttackOptions(epochs=15, **QUIET))
    return metrics["test/task/acc"], r["best_acc"]


@pytest.mark.slow
def test_dependence_lever_removes_a_planted_private_feature(tmp_path):
    task_off, private_off = _private_probe_accuracy(0, tmp_path)
    task_on, private_on = _private_probe_accuracy(3, tmp_path)
    assert task_off > 0.95 and task_on > 0.95  # the task stays solved
    assert private_off > 0.85  # without the lever, the encoder passes the private bit on
    assert private_on < 0.65  # with it, a fresh linear probe is near chance (50%)


# Bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("override, message", [
    ("method_args.dependence=-1", "method_args.dependence of method 'ours' must be >= 0"),
    ("method_args.centre=-0.5", "method_args.centre of method 'ours' must be >= 0"),
    ("method_args.bottleneck=-2", "method_args.bottleneck of method 'ours' must be >= 0"),
    ("method_args.dependence=.nan", "method_args.dependence"),
    ("method_args.bottleneck=4096", "method_args.bottleneck=4096 is wider than the encoder's output (256 channels"),
    ("train.adversary_steps=0", "train.adversary_steps"),
    ("adversaries=[{name: a, reset_every: -1}]", "reset_every"),
    ("adversaries=[{name: a, family: cnn}]", "family"),
    ("adversaries=[{name: a, kind: decoder, family: linear}]", "families are for kind attribute"),
    ("data.val_fraction=1", "data.val_fraction"),
    ("data.val_fraction=-0.1", "data.val_fraction"),
])
def test_bad_lever_settings_are_one_line_errors(tiny, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        cfg = tiny(override)
        Trainer(cfg, tmp_path / "bad").fit()
    assert "\n" not in str(e.value)


def test_a_non_finite_penalty_stops_training(tiny, tmp_path, monkeypatch):
    from privsplit.methods.ours import Ours

    monkeypatch.setattr(Ours, "feature_terms", lambda self, client, e, labels: {"dependence": e.sum() * math.inf})
    with pytest.raises(TrainingDiverged, match="dependence inf"):
        Trainer(tiny(), tmp_path / "inf", progress=False, log=lambda s: None).fit()


def test_val_fraction_carves_validation_from_training_images(tiny):
    from privsplit.data.base import load_dataset

    train, test, _ = load_dataset(tiny().data)
    vtrain, val, _ = load_dataset(tiny("data.val_fraction=0.25").data)
    assert len(vtrain) + len(val) == len(train) and len(val) == 24
    pool = {tuple(x.flatten().tolist()) for x in train.images}
    assert all(tuple(x.flatten().tolist()) in pool for x in val.images)  # from the training images
    again = load_dataset(tiny("data.val_fraction=0.25").data)[1]
    assert torch.equal(again.images, val.images)  # seeded
