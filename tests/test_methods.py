"""The baselines: each builds, its losses have the signs its paper defines,
and it trains end to end through the one engine."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from privsplit.cli import main
from privsplit.config import Config, apply_overrides, load_config
from privsplit.data.base import TaskInfo
from privsplit.errors import ConfigError
from privsplit.methods import METHODS, build_method
from privsplit.methods.disco import top_k_mask
from privsplit.methods.base import entropy
from privsplit.run import load_run
from privsplit.train.checkpoint import read_weights
from privsplit.train.engine import Trainer

from conftest import TINY

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASELINES = ["resnet18", "image_noise", "no_noise", "maxent", "disco", "deepobfuscator"]
# What each baseline needs on top of the default (ours-shaped) config.
NEEDS = {
    "resnet18": ["model.split=none", "reduction=[]"],
    "image_noise": ["model.split=none", "reduction=[]"],
    "no_noise": ["reduction=[]"],
    "maxent": ["model.split=none", "reduction=[]", "train.lam=1"],
    "disco": ["reduction=[]"],
    "deepobfuscator": ["reduction=[]"],
}
INFO = TaskInfo("digits", {"utility": ["even", "odd"], "private": [str(i) for i in range(10)]}, (3, 16, 16))


def cfg_for(method, *extra):
    return apply_overrides(Config(), [*TINY, f"method={method}", *NEEDS.get(method, []), *extra])


def build(method, *extra, info=INFO):
    torch.manual_seed(0)
    m = build_method(cfg_for(method, *extra))
    return m, m.build(info)


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *INFO.image_shape, generator=g)
    labels = {"utility": torch.randint(0, 2, (n,), generator=g), "private": torch.randint(0, 10, (n,), generator=g)}
    return x, labels


def descend(loss, params, step=1e-2):
    """Move ``params`` a small step along ``-grad(loss)`` (normalised)."""
    grads = torch.autograd.grad(loss, params)
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 0, "no gradient reached the parameters"
    with torch.no_grad():
        for p, g in zip(params, grads):
            p -= step * g / norm


# Registry and bad input ---------------------------------------------------


def test_every_baseline_is_registered():
    assert set(BASELINES) | {"ours"} == set(METHODS.names())


def test_unknown_method_lists_the_valid_ones(capsys):
    with pytest.raises(ConfigError, match="valid choices: deepobfuscator, disco, image_noise, maxent, no_noise, ours, resnet18"):
        build_method(cfg_for("maxnet"))
    assert main(["train", "--no-progress", "--set", "method=maxnet"]) == 2
    assert "unknown method 'maxnet'; valid choices:" in capsys.readouterr().err


@pytest.mark.parametrize(
    "method, extra, message",
    [
        ("maxent", ["model.split=rn18_3"], "cannot use split point 'rn18_3'.*set model.split to one of: none"),
        ("resnet18", ["model.split=rn18_2"], "cannot use split point 'rn18_2'"),
        ("image_noise", ["reduction=[{op: noise, sigma: 2}]"], "has no reduction chain.*set reduction=\\[\\]"),
        ("no_noise", ["model.split=none"], "unknown split point 'none' for backbone 'resnet18'; valid choices: rn18_1"),
        ("no_noise", ["reduction=[{op: shuffle}]"], "has no reduction chain"),
        ("no_noise", ["adversaries=[{name: a}]", "train.lam=0.1"], "task loss only.*train.lam=0"),
        ("maxent", ["adversaries=[{name: d, kind: decoder}]"], "adversaries d are not kind attribute"),
        ("maxent", ["train.lam=0"], "set train.lam > 0"),
        ("disco", ["method_args={ratio: 1.0}"], "must be in \\[0, 1\\)"),
        ("disco", ["train.lam=0"], "set train.lam > 0"),
        ("deepobfuscator", ["adversaries=[{name: a}]"], "add the missing one"),
        ("image_noise", ["method_args={sigma: 1, colour: 2}"], "no setting\\(s\\) colour in method_args; valid: sigma"),
        ("image_noise", ["method_args={sigma: high}"], "method_args.sigma of method 'image_noise' must be a number"),
        ("ours", ["method_args={sigma: 1}"], "no setting\\(s\\) sigma.*valid: bottleneck"),
        ("image_noise", ["data.name=svhn"], "no default image-noise sigma for dataset 'svhn'.*method_args.sigma"),
        ("maxent", ["data.name=svhn"], "no default embedding size d for dataset 'svhn'"),
    ],
)
def test_settings_a_method_cannot_serve_fail_clearly(method, extra, message):
    with pytest.raises(ConfigError, match=message):
        build(method, *extra)


def test_per_dataset_defaults():
    for name, sigma, dim in [("cifar10", 0.8, 128), ("digits", 0.8, 128), ("celeba", 2.0, 256), ("fairface", 2.0, 256)]:
        assert build_method(cfg_for("image_noise", f"data.name={name}")).options == {"sigma": sigma}
        assert build_method(cfg_for("maxent", f"data.name={name}")).options["dim"] == dim
    assert build_method(cfg_for("image_noise", "method_args.sigma=3")).options == {"sigma": 3.0}
    assert build_method(cfg_for("disco")).options == {"ratio": 0.5}


# resnet18 and image_noise --------------------------------------------------


def test_resnet18_sends_the_image_to_a_whole_network():
    method, model = build("resnet18")
    x, _ = batch()
    assert list(model.obfuscator.parameters()) == []
    assert torch.equal(model.obfuscator(x), x) and model.obfuscator.z_shape == INFO.image_shape
    # The server and the attacker are whole ResNet18s on the image: stem conv included.
    attacker = method.attacker_head(INFO, 10)
    assert attacker[0][0].in_channels == 3 and attacker(x).shape == (8, 10)
    assert sum(p.numel() for p in attacker.parameters()) > 11_000_000  # all of ResNet18, not a stage
    assert model.heads["task"][0][0].in_channels == 3


def test_image_noise_is_clamped_fresh_noise_without_parameters():
    method, model = build("image_noise", "method_args.sigma=0.8")
    x, _ = batch(64)
    assert list(model.obfuscator.parameters()) == []
    z1, z2 = model.obfuscator(x), model.obfuscator(x)
    assert z1.shape == x.shape and z1.min() >= 0 and z1.max() <= 1
    assert not torch.equal(z1, z2)  # fresh noise per call
    model.eval()  # deployed too: evaluation sees noise
    z3 = model.obfuscator(x)
    assert not torch.equal(z3, x)
    # Before clamping the noise has std sigma: pixels far from the edges keep it.
    _, big = build("image_noise", "method_args.sigma=0.01")
    mid = torch.full((4096, 3, 16, 16), 0.5)
    assert abs(float((big.obfuscator(mid) - mid).std()) - 0.01) < 1e-3
    assert method.attacker_head(INFO, 10)(z1).shape == (64, 10)


# no_noise ------------------------------------------------------------------


@pytest.mark.slow
def test_no_noise_is_the_bare_split_network():
    _, model = build("no_noise", "model.split=rn18_3")
    assert len(model.obfuscator.reduction) == 0 and model.obfuscator.z_shape == (256, 1, 1)
    # rn18_1 at 16x16 sends more numbers than the image: ours refuses it without noise, no_noise accepts it.
    _, early = build("no_noise", "model.split=rn18_1")
    assert math.prod(early.obfuscator.z_shape) > math.prod(INFO.image_shape)
    with pytest.raises(ConfigError, match="no 'noise' op"):
        build("ours", "model.split=rn18_1", "reduction=[]")
    x, labels = batch()
    loss = F.cross_entropy(model(x)["task"], labels["utility"])
    loss.backward()
    assert all(p.grad is not None for p in model.obfuscator.parameters())


# maxent --------------------------------------------------------------------


def test_maxent_encoder_step_raises_the_adversary_entropy():
    method, model = build("maxent", "method_args.dim=32")
    model.eval()
    assert model.obfuscator.z_shape == (32,)
    adv_cfg = model.adversary_configs["adversary"]
    adversary = model.adversaries["adversary"]
    with torch.no_grad():
        for layer in (adversary[0], adversary[-1]):
            layer.weight.mul_(10)  # a confident adversary: entropy well below log 10
    x, labels = batch()

    def h():
        with torch.no_grad():
            return float(entropy(adversary(model.obfuscator(x))))

    h0 = h()
    assert h0 < 0.9 * math.log(10)
    out = adversary(model.obfuscator(x))
    term = method.privacy_term(adv_cfg, out, x, labels)
    assert torch.allclose(term, math.log(10) - entropy(out))  # the privacy term is -H, shifted to >= 0
    descend(1.0 * term, list(model.obfuscator.parameters()))
    assert h() > h0
    # The adversary itself is a plain classifier: it minimises cross-entropy.
    out = adversary(model.obfuscator(x).detach())
    assert torch.allclose(method.adversary_loss(adv_cfg, out, x, labels), F.cross_entropy(out, labels["private"]))


def test_maxent_attacker_and_heads_are_mlps_on_the_embedding():
    method, model = build("maxent", "method_args={dim: 24, hidden: 16}")
    attacker = method.attacker_head(INFO, 10)
    assert [type(m).__name__ for m in attacker] == ["Linear", "ReLU", "Linear"]
    assert attacker[0].in_features == 24 and attacker[0].out_features == 16
    x, _ = batch()
    assert model(x)["task"].shape == (8, 2) and attacker(model.obfuscator(x)).shape == (8, 10)


# disco ---------------------------------------------------------------------


def test_top_k_mask_keeps_exactly_k_and_passes_gradients():
    scores = torch.randn(5, 12, requires_grad=True)
    mask = top_k_mask(scores, 4)
    assert torch.equal(mask.detach().sum(1), torch.full((5,), 4.0))
    assert set(mask.detach().unique().tolist()) <= {0.0, 1.0}
    (mask * torch.arange(12.0)).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


@pytest.mark.slow
def test_disco_keeps_k_channels_per_sample_and_trains_the_pruner():
    method, model = build("disco", "model.split=rn18_2", "method_args.ratio=0.75")
    client = model.obfuscator
    assert client.z_shape == (128, 2, 2) and client.keep == 32
    model.eval()
    x, labels = batch()
    a = client.encoder(x)
    kept = client.pruner(a).topk(32, dim=1).indices  # (N, k)
    z = client(x)
    for i in range(len(x)):
        mask = torch.zeros(128, dtype=torch.bool)
        mask[kept[i]] = True
        assert torch.equal(z[i, mask], a[i, mask]) and z[i, ~mask].abs().sum() == 0
    assert len({tuple(sorted(k.tolist())) for k in kept}) > 1  # dynamic: per-sample channels
    # The task loss reaches the pruner through the hard mask.
    F.cross_entropy(model.heads["task"](z), labels["utility"]).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in client.pruner.parameters())
    # Obfuscator loss = task - lam * adversary: its privacy step raises the adversary's loss.
    adv_cfg = model.adversary_configs["adversary"]
    adversary = model.adversaries["adversary"]

    def adv_loss():
        with torch.no_grad():
            return float(F.cross_entropy(adversary(client(x)), labels["private"]))

    before = adv_loss()
    term = method.privacy_term(adv_cfg, adversary(client(x)), x, labels)
    assert torch.allclose(term, -F.cross_entropy(adversary(client(x)), labels["private"]))
    descend(term, list(client.parameters()), step=1e-3)
    assert adv_loss() > before


def test_disco_prunes_a_vector_at_rn18_4():
    _, model = build("disco", "model.split=rn18_4")
    z = model.obfuscator(batch()[0])
    assert z.shape == (8, 512) and ((z != 0).sum(1) <= 256).all()


# deepobfuscator ------------------------------------------------------------


def test_deepobfuscator_fights_both_adversaries():
    method, model = build("deepobfuscator", "method_args={w_attribute: 0.5, w_reconstruction: 2}")
    assert sorted(a.kind for a in model.adversary_configs.values()) == ["attribute", "decoder"]
    # Training mode: batch statistics make a fresh decoder's output respond to z.
    model.train()
    x, labels = batch()
    dec_cfg, decoder = model.adversary_configs["decoder"], model.adversaries["decoder"]
    z = model.obfuscator(x)
    # On z, the obfuscator's gradient from the reconstruction term is -w times the decoder's own.
    g_obf = torch.autograd.grad(method.privacy_term(dec_cfg, decoder(z), x, labels), z, retain_graph=True)[0]
    g_dec = torch.autograd.grad(method.adversary_loss(dec_cfg, decoder(z), x, labels), z)[0]
    assert F.cosine_similarity(g_obf.flatten(), g_dec.flatten(), dim=0) < -0.999
    assert torch.allclose(g_obf, -2 * g_dec, atol=1e-7)
    att_cfg = model.adversary_configs["attribute"]
    out = model.adversaries["attribute"](z)
    assert torch.allclose(method.privacy_term(att_cfg, out, x, labels), -0.5 * F.cross_entropy(out, labels["private"]))

    def mse():
        with torch.no_grad():
            return float(F.mse_loss(decoder(model.obfuscator(x)), x))

    before = mse()
    descend(method.privacy_term(dec_cfg, decoder(model.obfuscator(x)), x, labels), list(model.obfuscator.parameters()))
    assert mse() > before


# The engine and end-to-end runs --------------------------------------------


def test_parameterless_obfuscators_get_no_optimiser(tmp_path):
    trainer = Trainer(cfg_for("image_noise"), tmp_path / "run", progress=False)
    trainer._setup()
    assert set(trainer.optimizers) == {"heads"}
    x, labels = batch(16)
    assert math.isfinite(trainer.step(x, labels)["train/task_loss"])


@pytest.mark.parametrize("method", BASELINES)
@pytest.mark.slow
def test_tiny_run_through_the_cli(method, tmp_path, capsys):
    sets = [s for o in [*TINY, f"method={method}", *NEEDS[method], "train.threads=1"] for s in ("--set", o)]
    assert main(["train", "--out", str(tmp_path / "run"), "--no-progress", *sets]) == 0
    assert f"finished: {method} on digits" in capsys.readouterr().out
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["status"] == "finished" and 0 <= record["metrics"]["test/task/acc"] <= 1
    run = load_run(tmp_path / "run")  # rebuilds the method from the run folder alone
    assert tuple(record["z_shape"]) == run.model.obfuscator.z_shape
    with torch.no_grad():
        out = run.model(torch.rand(2, 3, 16, 16))["task"]
    assert out.shape == (2, 2) and torch.isfinite(out).all()
    if method in ("resnet18", "image_noise"):
        assert read_weights(tmp_path / "run" / "obfuscator.safetensors") == {}
    if method in ("maxent", "disco", "deepobfuscator"):
        assert any(k.startswith("test/adv/") for k in record["metrics"])
    # Its client part exports to ONNX, and ONNX Runtime computes the same z.
    import onnxruntime as ort

    assert main(["export", str(tmp_path / "run"), "--format", "onnx"]) == 0
    sess = ort.InferenceSession(str(tmp_path / "run" / "export" / "obfuscator.onnx"), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    manifest = json.loads((tmp_path / "run" / "export" / "obfuscator.json").read_text())
    assert manifest["random_ops"] == (["noise"] if method == "image_noise" else [])
    client = run.model.obfuscator
    assert manifest["draws"]["per_image"] == client.draws == (2 * 3 * 16 * 16 if method == "image_noise" else 0)
    feed = {"image": x.numpy()}
    u = None
    if client.draws:  # random draws are an input: the same draws give the same z
        u = torch.rand(3, client.draws, generator=torch.Generator().manual_seed(1)).clamp(2**-24, 1 - 2**-24)
        feed["draws"] = u.numpy()
    z = torch.from_numpy(sess.run(None, feed)[0])
    assert tuple(z.shape) == (3, *record["z_shape"])
    with torch.no_grad():
        assert torch.allclose(z, client(x, u), atol=1e-4)
    if method == "image_noise":  # the clamped noisy image
        assert 0 <= z.min() and z.max() <= 1 and (z - x).abs().mean() > 0.1


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("cifar10_*.yaml")), ids=lambda p: p.stem)
def test_cifar10_configs_build(path):
    cfg = load_config(path)
    info = TaskInfo("cifar10", {"utility": [str(i) for i in range(10)], "private": ["a", "b"]}, (3, 32, 32))
    with torch.device("meta"):
        model = build_method(cfg).build(info)
    assert model.heads and cfg.data.name == "cifar10"
