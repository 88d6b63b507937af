import pytest
import torch

from privsplit.errors import ConfigError
from privsplit.obfuscator import Obfuscator
from privsplit.models import split_backbone
from privsplit.reduction import (
    OPS,
    Reduction,
    build_op,
    frequency_filter,
    gaussian_noise,
    random_replace,
    random_shuffle,
)

# One valid configuration per registered op; the generic tests walk all of them.
EXAMPLES = {
    "frequency": {"low": 0.1, "high": 0.6},
    "noise": {"sigma": 0.5},
    "replace": {"fraction": 0.3},
    "shuffle": {"fraction": 0.5},
    "resize": {"size": [3, 5]},
}


def test_every_op_has_an_example():
    assert sorted(EXAMPLES) == OPS.names()


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_op_shape_gradient_finite_and_seeded(name):
    op = build_op({"op": name, **EXAMPLES[name]})
    z = torch.randn(4, 8, 6, 6, requires_grad=True)
    out = op(z)
    assert out.shape[1:] == op.output_shape((8, 6, 6))
    assert torch.isfinite(out).all()
    out.pow(2).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    torch.manual_seed(3)
    a = op(z)
    torch.manual_seed(3)
    b = op(z)
    assert torch.equal(a, b)
    if op.random:
        assert not torch.equal(a, op(z)), "a random op must draw fresh randomness each call"


@pytest.mark.parametrize(
    "spec,message",
    [
        ({"op": "noise", "sigma": -1}, "sigma must be a finite number >= 0"),
        ({"op": "noise", "sigma": float("nan")}, "sigma"),
        ({"op": "noise", "sigma": 1, "normalize": "l2"}, "normalize must be one of none, rms"),
        ({"op": "replace", "fraction": 1.5}, r"fraction must be a fraction in \[0, 1\]"),
        ({"op": "shuffle", "fraction": -0.1}, r"fraction in \[0, 1\]"),
        ({"op": "frequency", "low": 0.5, "high": 0.2}, "must be below"),
        ({"op": "frequency", "mode": "keep"}, "mode must be one of pass, reject"),
        ({"op": "resize", "size": 0}, "a whole number from 1 to 4096"),
        ({"op": "noise"}, "needs sigma"),
        ({"op": "noise", "sigma": 1, "mean": 0}, "unknown: mean"),
        ({"op": "blur"}, "valid choices: frequency, noise, replace, resize, shuffle"),
        ({"sigma": 1}, "'op' key"),
    ],
)
def test_bad_arguments_are_refused(spec, message):
    with pytest.raises(ConfigError, match=message):
        build_op(spec)


def test_spatial_ops_refuse_a_vector_representation():
    with pytest.raises(ConfigError, match="needs a spatial representation"):
        Reduction.from_config([{"op": "shuffle"}]).output_shape((512,))


def test_noise_rms_normalisation_fixes_power():
    z = torch.randn(5, 4, 3, 3) * torch.tensor([1.0, 10, 100, 1000, 1e4]).view(5, 1, 1, 1)
    out = gaussian_noise(z, 0.0, "rms")
    rms = out.flatten(1).pow(2).mean(1).sqrt()
    assert torch.allclose(rms, torch.ones(5), atol=1e-5)
    torch.manual_seed(0)
    noise = gaussian_noise(torch.zeros(20000, 1), 3.0, "none")
    assert abs(noise.std().item() - 3.0) < 0.05


def test_frequency_filter_full_band_is_identity_and_bands_split_the_signal():
    z = torch.randn(2, 3, 8, 9)
    assert torch.allclose(frequency_filter(z, 0.0, 1.0, "pass"), z, atol=1e-5)
    assert torch.allclose(frequency_filter(z, 0.0, 1.0, "reject"), torch.zeros_like(z), atol=1e-5)
    low = frequency_filter(z, 0.0, 0.3, "pass")
    rest = frequency_filter(z, 0.0, 0.3, "reject")
    assert torch.allclose(low + rest, z, atol=1e-5)
    # Only DC passes: every map becomes its own mean.
    dc = frequency_filter(z, 0.0, 1e-6, "pass")
    assert torch.allclose(dc, z.mean((-2, -1), keepdim=True).expand_as(z), atol=1e-5)


def test_shuffle_moves_whole_positions():
    z = torch.randn(3, 4, 5, 5)
    out = random_shuffle(z, 1.0)
    for n in range(3):
        cols_in = sorted(map(tuple, z[n].flatten(1).T.tolist()))
        cols_out = sorted(map(tuple, out[n].flatten(1).T.tolist()))
        assert cols_in == cols_out
    assert not torch.equal(out, z)
    assert torch.equal(random_shuffle(z, 0.0), z)
    part = random_shuffle(z, 0.2)  # 5 of 25 positions take part
    unchanged = (part == z).all(1).flatten(1).sum(1)
    assert (unchanged >= 20).all()


def test_replace_fraction_is_respected():
    torch.manual_seed(0)
    z = torch.randn(4, 10000)
    assert torch.equal(random_replace(z, 0.0), z)
    changed = (random_replace(z, 0.25) != z).float().mean().item()
    assert abs(changed - 0.25) < 0.01
    assert (random_replace(z, 1.0) != z).all()


def test_noise_rule_rejects_large_noiseless_representation():
    enc, _ = split_backbone("resnet18", "rn18_1", 2)  # 64x8x8 = 4096 > 3x32x32 = 3072
    with pytest.raises(ConfigError, match="no 'noise' op"):
        Obfuscator(enc, Reduction.from_config([]), (3, 32, 32))
    with pytest.raises(ConfigError, match="no 'noise' op"):
        Obfuscator(enc, Reduction.from_config([{"op": "noise", "sigma": 0}]), (3, 32, 32))
    Obfuscator(enc, Reduction.from_config([{"op": "noise", "sigma": 1}]), (3, 32, 32))
    Obfuscator(enc, Reduction.from_config([{"op": "resize", "size": 4}]), (3, 32, 32))
    Obfuscator(enc, Reduction.from_config([]), (3, 32, 32), allow_no_noise=True)


def test_obfuscator_applies_noise_at_inference():
    enc, _ = split_backbone("resnet18", "rn18_3", 2)
    obf = Obfuscator(enc, Reduction.from_config([{"op": "noise", "sigma": 1}]), (3, 32, 32)).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert not torch.equal(obf(x), obf(x))
    assert obf.z_shape == (256, 2, 2)
