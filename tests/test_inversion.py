"""The white-box inversion and the model-space attack, on tiny clients whose inverse is known."""

import math

import pytest
import torch
from torch import nn

from privsplit.attacks import ATTACKS, AttackOptions, EvalData, InversionSettings, invert, invert_model_space
from privsplit.attacks.inversion import PIXELS_PER_BATCH, batch_for, check_differentiable, total_variation
from privsplit.config import Config
from privsplit.data.base import TaskInfo
from privsplit.errors import ConfigError
from privsplit.evaluate import check_attacks, worst_case_reconstruction
from privsplit.metrics.image import image_metrics
from privsplit.obfuscator import ClientPart, Obfuscator
from privsplit.reduction import Reduction

QUIET = {"progress": False, "log": lambda s: None}
SHAPE = (3, 16, 16)


def smooth_images(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 16, 16) in [0, 1]: bilinear upsampling of 4x4 random colours, far from their mean."""
    g = torch.Generator().manual_seed(seed)
    return nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=SHAPE[1:], mode="bilinear",
                                     align_corners=False)


def orthogonal_patches(seed: int = 0) -> nn.Conv2d:
    """An invertible linear encoder: each 2x2 patch (12 values) times a random orthogonal 12x12
    matrix, (N, 3, 16, 16) -> (N, 12, 8, 8)."""
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=torch.Generator().manual_seed(seed)))
    conv = nn.Conv2d(3, 12, 2, stride=2, bias=False)
    conv.weight.data = q.reshape(12, 3, 2, 2)
    return conv


def client(encoder: nn.Module, chain=()) -> Obfuscator:
    obf = Obfuscator(encoder, Reduction.from_config(list(chain)), SHAPE, allow_no_noise=True).eval()
    for p in obf.parameters():
        p.requires_grad_(False)
    return obf


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return image_metrics(a, b)["psnr"]


def mean_start(n: int = 64) -> torch.Tensor:
    return smooth_images(n, 99).mean(0, keepdim=True)  # (1, 3, 16, 16): a "mean training image"


EXACT = InversionSettings(steps=600, lr=0.05, tv=0.0, batch_size=16)


@pytest.mark.parametrize("encoder", [nn.Identity(), orthogonal_patches()], ids=["identity", "orthogonal-linear"])
def test_inversion_recovers_an_invertible_client_nearly_exactly(encoder):
    x = smooth_images(24, 0)
    c = client(encoder)
    with torch.no_grad():
        z = c(x)
    recon, info = invert(c, z, mean_start(), EXACT, progress=False)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    # Batched (16 + 8 images), and every batch stopped early, its objective flat.
    assert len(info["steps"]) == 2 and info["converged"], info
    assert psnr(x, recon) > 40, "an invertible client is inverted to within 1/255 on average"
    assert psnr(x, mean_start().expand_as(x)) < 20


def test_a_weak_prior_keeps_its_bias_small_on_smooth_images():
    x = smooth_images(16, 1)
    c = client(orthogonal_patches(1))
    with torch.no_grad():
        z = c(x)
    weak = psnr(x, invert(c, z, mean_start(), InversionSettings(steps=400, tv=0.03, batch_size=16), progress=False)[0])
    assert weak > 30  # TV 0.03 against an exact fit
    # The default (TV 1, chosen where z underdetermines the image) pulls harder towards smooth.
    default = psnr(x, invert(c, z, mean_start(), InversionSettings(steps=400, batch_size=16), progress=False)[0])
    assert default < weak


@pytest.mark.slow
def test_averaging_more_queries_gives_a_better_inversion():
    x = smooth_images(32, 2)
    c = client(nn.Identity(), [{"op": "noise", "sigma": 0.5, "normalize": "none"}])
    torch.manual_seed(0)
    settings = InversionSettings(steps=300, lr=0.05, tv=0.05, batch_size=32)
    scores = {}
    for k in (1, 4, 16, math.inf):
        with torch.no_grad():
            z = c.queried(c.encode(x), k)  # the server's mean of k noisy sends
        scores[k] = psnr(x, invert(c, z, mean_start(), settings, progress=False)[0])
    # Monotone within noise: each step up in k gains clearly, the limit is the best.
    assert scores[4] > scores[1] + 1 and scores[16] > scores[4] + 1 and scores[math.inf] > scores[16] - 0.5, scores
    assert scores[math.inf] > 30, scores


@pytest.mark.slow
def test_the_model_space_attack_recovers_less_than_the_white_box_one():
    x = smooth_images(16, 3)
    c = client(orthogonal_patches(3))
    with torch.no_grad():
        z = c(x)
    settings = InversionSettings(steps=300, tv=0.03, batch_size=16)  # a weak prior: z determines x
    white = psnr(x, invert(c, z, mean_start(), settings, progress=False)[0])
    recon, info = invert_model_space(c, z, mean_start(), settings, seed=0, progress=False)
    blind = psnr(x, recon)
    assert info["parameters"] == 12 * 12, "the surrogate has the client's architecture"
    assert white > 30 and blind < white - 5, (white, blind)
    # The surrogate fits z (the attack optimises it) without owning the client's weights.
    assert info["fit"] < 0.1
    assert torch.equal(c.encoder.weight, orthogonal_patches(3).weight), "the client itself is untouched"


def _data(c: nn.Module, n_train: int = 32, n_test: int = 12) -> EvalData:
    x_tr, x_te = smooth_images(n_train, 10), smooth_images(n_test, 11)
    with torch.no_grad():
        e_tr, e_te = c.encode(x_tr), c.encode(x_te)
    info = TaskInfo("synthetic", {"utility": ["a", "b"], "private": ["a", "b"]}, SHAPE)
    y = {"private": torch.zeros(n_train, dtype=torch.long), "utility": torch.zeros(n_train, dtype=torch.long)}
    yt = {k: v[:n_test] for k, v in y.items()}
    to8 = lambda x: (x * 255).round().to(torch.uint8)  # noqa: E731
    return EvalData(Config(), info, c, e_tr, e_te, y, yt, to8(x_tr), to8(x_te))


@pytest.mark.slow
def test_attacks_report_every_query_metric_and_grid_and_the_worst_case(tmp_path):
    c = client(orthogonal_patches(4), [{"op": "noise", "sigma": 0.1, "normalize": "none"}])
    data = _data(c)
    options = AttackOptions(queries=(1, math.inf), inversion_steps=150, batch_size=8, out_dir=tmp_path, **QUIET)
    results = {name: ATTACKS.create(name).run(data, options) for name in ("inversion", "model_space")}
    inv = results["inversion"]
    assert ATTACKS.get("inversion").reconstructs and ATTACKS.get("model_space").needs_images
    assert list(inv["by_queries"]) == ["1", "inf"] and inv["metrics"] == inv["by_queries"]["1"]["metrics"]
    assert set(inv["metrics"]) >= {"mse", "l1", "ssim", "ms_ssim", "psnr", "lpips", "st_lpips"}
    assert inv["metrics"]["ms_ssim"] is None and "ms_ssim" in inv["metrics"]["notes"]  # 16 px
    assert inv["by_queries"]["inf"]["metrics"]["psnr"] > inv["mean_image_baseline"]["psnr"] + 5
    assert inv["verdict"] == "reconstructs" and inv["settings"]["steps"] == 150
    for name in ("inversion.png", "inversion_qinf.png", "model_space.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "fresh weights" in results["model_space"]["assumes"]
    # Worst case per metric and k, the attacker named: here the white-box inversion everywhere it matters.
    worst = worst_case_reconstruction(results)
    assert set(worst) == {"1", "inf"} and "ms_ssim" not in worst["1"]
    for q in worst:
        assert worst[q]["psnr"]["value"] == max(r["by_queries"][q]["metrics"]["psnr"] for r in results.values())
        assert worst[q]["mse"]["value"] == min(r["by_queries"][q]["metrics"]["mse"] for r in results.values())
    assert worst["inf"]["ssim"]["attacker"] == "inversion"
    # The report renders each attack beside the mean image, and the worst case with the attacker named.
    from privsplit.report import image_attack_markdown, worst_case_markdown

    md = "\n".join(image_attack_markdown("inversion", inv))
    assert "| PSNR |" in md and "1 query | inf queries | mean training image" in md and "inversion.png" in md
    table = "\n".join(worst_case_markdown({"attacks": results, "reconstruction_privacy": worst}))
    assert f"| inf | {worst['inf']['mse']['value']:.2f} ({worst['inf']['mse']['attacker']}) |" in table


def test_shuffle_draws_unknown_to_the_attacker_are_drawn_afresh_and_said_so():
    c = client(nn.Identity(), [{"op": "shuffle", "fraction": 0.1}])
    data = _data(c, n_test=4)
    r = ATTACKS.create("inversion").run(data, AttackOptions(inversion_steps=50, batch_size=4, **QUIET))
    assert "shuffle are unknown to the attacker" in r["note"] and r["metrics"]["psnr"] > 0


def test_large_images_are_optimised_in_smaller_batches_and_the_client_is_left_as_it_was():
    assert batch_for(128, (1, 3, 32, 32)) == 128  # 32 px: the setting
    assert batch_for(128, (3, 178, 178)) == PIXELS_PER_BATCH // 178**2 < 128
    assert batch_for(128, (3, 4096, 4096)) == 1
    c = client(orthogonal_patches())
    before = {k: v.clone() for k, v in c.state_dict().items()}
    strides = c.encoder.weight.stride()
    x = smooth_images(6, 0)
    with torch.no_grad():
        z = c(x)
    recon, info = invert(c, z, mean_start(), InversionSettings(steps=30, batch_size=4), progress=False)
    assert len(info["steps"]) == 2 and recon.is_contiguous()  # 4 + 2 images
    # The optimisation ran on a channels-last copy: the caller's client keeps its layout and weights.
    assert c.encoder.weight.stride() == strides
    assert all(torch.equal(before[k], v) for k, v in c.state_dict().items())


def test_total_variation_is_zero_on_flat_images():
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.equal(total_variation(flat), torch.zeros(2))
    assert (total_variation(smooth_images(2, 0)) > 0).all()


@pytest.mark.parametrize("field, value, words", [
    ("inversion_steps", 0, "--inversion-steps must be a whole number >= 1"),
    ("inversion_steps", -5, "--inversion-steps must be a whole number >= 1"),
    ("inversion_tv", -0.1, "--inversion-tv (the prior's weight) must be a finite number >= 0"),
    ("inversion_lr", math.nan, "--inversion-lr must be a finite number > 0"),
    ("inversion_lr", math.inf, "--inversion-lr must be a finite number > 0"),
    ("inversion_lr", 0.0, "--inversion-lr must be a finite number > 0"),
])
def test_bad_settings_are_one_line_errors(field, value, words):
    options = AttackOptions(**{field: value})
    for names in (["inversion"], ["attribute", "model_space"]):
        with pytest.raises(ConfigError) as e:
            check_attacks(names, options)
        assert words in str(e.value) and "\n" not in str(e.value)
    check_attacks(["attribute"], options)  # other attacks do not use them


@pytest.mark.parametrize("flag, value", [("--inversion-steps", "0"), ("--inversion-tv", "-1"), ("--inversion-lr", "nan")])
def test_cli_bad_settings_fail_before_any_work(flag, value, tmp_path, capsys):
    from privsplit.cli import main

    # The run folder does not exist: the settings are checked first.
    assert main(["attack", str(tmp_path / "no-run"), "--attack", "inversion", flag, value]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("privsplit attack: error: --inversion-") and "\n" not in err, err


class _OnnxLike(ClientPart):
    """A client that leaves torch (as an ONNX Runtime session does): no gradient path."""

    def __init__(self) -> None:
        super().__init__()
        self.image_shape = self.z_shape = SHAPE

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.detach().numpy() * 2.0)


def test_a_client_without_a_gradient_path_is_a_clear_error():
    with pytest.raises(ConfigError, match="needs the run's PyTorch weights"):
        check_differentiable(_OnnxLike(), smooth_images(1, 0))
    with pytest.raises(ConfigError, match="needs the run's PyTorch weights.*got a function"):
        check_differentiable(lambda x: x, smooth_images(1, 0))
    data = _data(_OnnxLike(), n_test=2)
    with pytest.raises(ConfigError, match="ONNX client has no gradient"):
        ATTACKS.create("inversion").run(data, AttackOptions(inversion_steps=5, **QUIET))
