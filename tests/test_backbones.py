import pytest
import torch

from privsplit.errors import ConfigError
from privsplit.models import BACKBONES, Decoder, build_backbone, representation_shape, split_backbone, split_points
from privsplit.models.unet import UNet


@pytest.mark.parametrize(
    "split,shape",
    [("rn18_1", (64, 45, 45)), ("rn18_2", (128, 23, 23)), ("rn18_3", (256, 12, 12)), ("rn18_4", (512,))],
)
def test_resnet18_split_shapes_at_178(split, shape):
    assert representation_shape("resnet18", split, (178, 178)) == shape


def test_unet_is_image_sized_and_head_is_whole_resnet18():
    assert representation_shape("unet", "unet", (178, 178)) == (3, 178, 178)
    enc, head = split_backbone("unet", "unet", num_classes=7)
    x = torch.rand(2, 3, 40, 40)
    assert enc(x).shape == x.shape
    assert head(enc(x)).shape == (2, 7)
    assert sum(p.numel() for p in head.parameters()) == sum(
        p.numel() for p in build_backbone("resnet18", 7).parameters()
    )


@pytest.mark.parametrize("backbone", BACKBONES.names())
@pytest.mark.slow
def test_every_split_point_composes_to_the_whole_network(backbone):
    size = 64 if backbone == "alexnet" else 32
    x = torch.rand(2, 3, size, size)
    for point in split_points(backbone):
        torch.manual_seed(0)
        enc, head = split_backbone(backbone, point, num_classes=5)
        enc.eval(), head.eval()
        z = enc(x)
        assert z.shape[1:] == representation_shape(backbone, point, (size, size))
        assert head(z).shape == (2, 5)


def test_split_reuses_the_uncut_initialisation():
    torch.manual_seed(0)
    whole = build_backbone("resnet18", 3).eval()
    torch.manual_seed(0)
    enc, head = split_backbone("resnet18", "rn18_2", 3)
    enc.eval(), head.eval()
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(whole(x), head(enc(x)), atol=1e-6)


def test_bad_names_and_sizes_give_clear_errors():
    with pytest.raises(ConfigError, match="valid choices: .*resnet18"):
        split_backbone("vgg16", "rn18_1", 2)
    with pytest.raises(ConfigError, match="valid choices: rn18_1, rn18_2, rn18_3, rn18_4"):
        split_backbone("resnet18", "rn18_5", 2)
    with pytest.raises(ConfigError, match="num_classes"):
        split_backbone("resnet18", "rn18_1", 0)
    with pytest.raises(ConfigError, match="larger data.image_size"):
        representation_shape("alexnet", "alex_3", (32, 32))


@pytest.mark.parametrize("attacker", [False, True])
@pytest.mark.parametrize("z_shape", [(256, 2, 2), (64, 8, 8), (512,), (3, 20, 20)])
def test_decoder_reconstructs_image_shape(z_shape, attacker):
    dec = Decoder(z_shape, (3, 20, 20), normalize_input=attacker, taper=attacker)
    out = dec(torch.randn(2, *z_shape))
    assert out.shape == (2, 3, 20, 20)
    assert out.min() >= 0 and out.max() <= 1


def test_decoder_options_keep_the_plain_design_loadable_and_taper_the_widths():
    plain = Decoder((256, 12, 12), (3, 178, 178))
    # The proxy adversaries' decoder is unchanged: runs saved before the options still load.
    assert [tuple(v.shape) for v in plain.state_dict().values()][:2] == [(64, 256, 3, 3), (64,)]
    tapered = Decoder((256, 12, 12), (3, 178, 178), taper=True, normalize_input=True)
    widths = [m.out_channels for m in tapered.body if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert widths == [128, 128, 64, 32, 32]  # 12 -> 24 -> 48 -> 96 -> 192 px, then 178
    assert isinstance(tapered.norm, torch.nn.BatchNorm2d)
    # Normalised input: z and 1000 z give the same images (batch statistics in training).
    z = torch.randn(4, 256, 12, 12)
    assert torch.allclose(tapered(z), tapered(1000 * z), atol=1e-4)


def test_unet_handles_odd_sizes():
    assert UNet()(torch.rand(1, 3, 29, 31)).shape == (1, 3, 29, 31)
