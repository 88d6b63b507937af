import math

import pytest
import torch

from privsplit.errors import ConfigError
from privsplit.metrics import (
    MS_SSIM_MIN_SIDE,
    accuracy,
    chance_given,
    chance_level,
    client_cost,
    count_flops,
    cpu_latency_ms,
    image_metrics,
    load_lpips,
    memory_mb,
    payload_bytes,
)
from privsplit.models import build_backbone, split_backbone

# The paper's client-cost table: ResNet18 at 178x178.
PAPER = {"rn18_1": (0.75, 0.60), "rn18_2": (1.31, 2.61), "rn18_3": (1.92, 10.63), "rn18_4": (2.52, 42.67)}


@pytest.mark.parametrize("split", sorted(PAPER))
def test_cost_matches_paper_table(split):
    encoder, _ = split_backbone("resnet18", split, num_classes=10)
    gflops, mb = PAPER[split]
    assert round(count_flops(encoder, (3, 178, 178)).gflops, 2) == gflops
    assert round(memory_mb(encoder), 2) == mb


def test_cost_of_full_resnet18_matches_paper():
    net = build_backbone("resnet18", num_classes=10)
    assert round(count_flops(net, (3, 178, 178)).gflops, 2) == 2.52
    assert round(memory_mb(net), 2) == 42.69


def test_flop_count_of_a_single_conv_by_hand():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # 8x10x10 outputs, each 3*3*3 multiply-adds, 2 FLOPs each.
    assert count_flops(conv, (3, 10, 10)).total == 2 * 8 * 100 * 27
    seq = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
    n = 8 * 100
    assert count_flops(seq, (3, 10, 10)).by_kind == {"conv": 2 * n * 27, "batchnorm": 2 * 2 * n, "relu": 2 * n, "pool": 2 * n}


def test_memory_counts_buffers_and_payload_bytes():
    bn = torch.nn.BatchNorm2d(4)  # 8 parameters + 9 buffers (mean, var, num_batches_tracked)
    assert memory_mb(bn) == 17 * 4 / 2**20
    assert payload_bytes((256, 12, 12)) == 256 * 144 * 4
    assert payload_bytes((256, 12, 12), 2) == 256 * 144 * 2


def test_client_cost_of_an_obfuscator():
    from privsplit.obfuscator import Obfuscator
    from privsplit.reduction import Reduction

    enc, _ = split_backbone("resnet18", "rn18_3", num_classes=2)
    obf = Obfuscator(enc, Reduction.from_config([{"op": "noise", "sigma": 2}, {"op": "resize", "size": 1}]), (3, 32, 32))
    c = client_cost(obf, (3, 32, 32), latency_repeats=2)
    assert c["z_shape"] == list(obf.z_shape)
    assert c["bytes_per_sample_float32"] == 4 * math.prod(obf.z_shape)
    assert c["gflops"] == count_flops(enc, (3, 32, 32)).gflops
    assert c["latency_ms_cpu_batch1"] > 0
    assert cpu_latency_ms(torch.nn.Identity(), (3, 4, 4), repeats=3) >= 0


def test_accuracy_and_chance():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert chance_level(torch.tensor([0, 0, 0, 1])) == 0.75


def test_chance_given_the_task_label():
    # CIFAR-10 in miniature: 6 living classes, 4 non-living, 10 images each.
    private = torch.arange(10).repeat_interleave(10)
    living = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 0, 0]).repeat_interleave(10)
    assert chance_given(private, living) == pytest.approx(0.2)  # 1/6 of the living + 1/4 of the rest
    assert chance_given(private, private) == 1.0  # knowing the private label itself
    assert chance_given(private, torch.zeros(100, dtype=torch.long)) == chance_level(private)


def test_identical_images_ssim_one_psnr_infinite():
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    m = image_metrics(x, x.clone())
    assert m["mse"] == 0 and m["l1"] == 0
    assert m["ssim"] == pytest.approx(1.0)
    assert math.isinf(m["psnr"]) and m["psnr"] > 0


def test_metrics_agree_with_torchmetrics_on_a_noisy_pair():
    from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

    g = torch.Generator().manual_seed(1)
    x = torch.rand(4, 3, 32, 32, generator=g)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    m = image_metrics(x, y)
    a, b = x.double() * 255, y.double() * 255
    assert m["mse"] == pytest.approx(float(((a - b) ** 2).mean()))
    assert m["l1"] == pytest.approx(float((a - b).abs().mean()))
    assert m["psnr"] == pytest.approx(10 * math.log10(255**2 / m["mse"]), rel=1e-6)
    assert m["psnr"] == pytest.approx(float(PeakSignalNoiseRatio(data_range=255.0)(b, a)), rel=1e-6)
    assert m["ssim"] == pytest.approx(float(StructuralSimilarityIndexMeasure(data_range=255.0)(b, a)), rel=1e-5)
    assert 0 < m["ssim"] < 1


@pytest.mark.slow
def test_ssim_in_chunks_equals_the_whole_batch_and_stays_small(monkeypatch):
    import resource

    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    import privsplit.metrics.image as mi

    g = torch.Generator().manual_seed(3)
    x = torch.rand(10, 3, 32, 32, generator=g)
    y = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    whole = float(ssim(y.double() * 255, x.double() * 255, data_range=255.0))
    monkeypatch.setattr(mi, "SSIM_CHUNK_VALUES", 3 * 3 * 32 * 32)  # chunks of 3, 3, 3 and 1 images
    assert image_metrics(x, y)["ssim"] == pytest.approx(whole, rel=1e-5)
    monkeypatch.undo()
    # 2000 CIFAR-sized images: float64 in one call took ~11 GB here; in float32 chunks well under 1 GB more.
    big = torch.rand(2000, 3, 32, 32, generator=g)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image_metrics(big, big.flip(0))
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024 < 1.5e9


def test_ms_ssim_only_for_large_enough_images():
    from torchmetrics.image import MultiScaleStructuralSimilarityIndexMeasure

    small = torch.rand(2, 3, 64, 64)
    m = image_metrics(small, small.flip(-1))
    assert m["ms_ssim"] is None and "160 px" in m["notes"]["ms_ssim"]
    g = torch.Generator().manual_seed(2)
    big = torch.rand(2, 3, MS_SSIM_MIN_SIDE, MS_SSIM_MIN_SIDE, generator=g)
    other = (big + 0.05 * torch.randn(big.shape, generator=g)).clamp(0, 1)
    m = image_metrics(big, other)
    ref = MultiScaleStructuralSimilarityIndexMeasure(data_range=255.0)(other.double() * 255, big.double() * 255)
    assert m["ms_ssim"] == pytest.approx(float(ref), rel=1e-5)
    assert image_metrics(big, big)["ms_ssim"] == pytest.approx(1.0)


def test_lpips_unavailable_without_weights(monkeypatch):
    monkeypatch.delenv("PRIVSPLIT_LPIPS_WEIGHTS", raising=False)
    assert load_lpips(None) is None
    m = image_metrics(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    assert m["lpips"] is None and m["notes"]["lpips"].startswith("unavailable")


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    """LPIPS-shaped weights written here (random backbone: the real ImageNet
    weights cannot be downloaded), in both accepted layouts."""
    from safetensors.torch import save_file
    from torchmetrics.functional.image.lpips import _LPIPS
    from torchvision.models import alexnet

    d = tmp_path_factory.mktemp("lpips")
    torch.manual_seed(0)
    net = _LPIPS(pretrained=True, net="alex", pnet_rand=True)  # lin layers from torchmetrics, random backbone
    full = {k: v.contiguous() for k, v in net.state_dict().items() if not k.startswith("lins.")}
    save_file(full, str(d / "lpips_alex.safetensors"))
    torch.save(alexnet(weights=None).state_dict(), d / "alexnet.pth")
    save_file({"conv.weight": torch.zeros(3, 3)}, str(d / "wrong.safetensors"))
    torch.save(torch.nn.Linear(3, 3).state_dict(), d / "wrong.pth")
    return d


@pytest.mark.slow
def test_lpips_from_a_weights_file(lpips_files, monkeypatch):
    lp = load_lpips(lpips_files / "lpips_alex.safetensors")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # LPIPS(alex) needs >= 32 px
    assert image_metrics(x[..., :16, :16], x[..., :16, :16], load_lpips(lpips_files / "lpips_alex.safetensors"))["lpips"] is None
    assert lp.score(x, x) == pytest.approx(0.0, abs=1e-6)
    assert lp.score(x, x.flip(-1)) > 0
    assert image_metrics(x, x.flip(-1), lp)["lpips"] == pytest.approx(lp.score(x, x.flip(-1)))
    monkeypatch.setenv("PRIVSPLIT_LPIPS_WEIGHTS", str(lpips_files / "alexnet.pth"))
    assert load_lpips(None).score(x, x.flip(-1)) > 0  # torchvision AlexNet + torchmetrics' linear layers


@pytest.mark.parametrize("name", ["wrong.safetensors", "wrong.pth", "missing.pth"])
def test_lpips_rejects_other_weights(lpips_files, name):
    with pytest.raises(ConfigError, match="LPIPS|does not exist"):
        load_lpips(lpips_files / name)


def test_st_lpips_loads_offline_and_is_its_own_column():
    from privsplit.metrics.image import load_st_lpips

    st = load_st_lpips()
    assert st is not None, "stlpips-pytorch is part of the dev extra"
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 3, 48, 48, generator=g)
    near = (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    far = torch.rand(4, 3, 48, 48, generator=g)
    m_same, m_near, m_far = (image_metrics(a, b, st_lpips=st) for b in (a, near, far))
    assert m_same["st_lpips"] == pytest.approx(0.0, abs=1e-6)
    assert 0 < m_near["st_lpips"] < m_far["st_lpips"]
    assert m_far["lpips"] is None and "lpips" in m_far["notes"]  # real LPIPS still needs ImageNet weights
    small = image_metrics(a[:, :, :16, :16], far[:, :, :16, :16], st_lpips=st)
    assert small["st_lpips"] is None and "not computed" in small["notes"]["st_lpips"]
    assert "not installed" in image_metrics(a, far)["notes"]["st_lpips"]
