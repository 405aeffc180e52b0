"""get_network: the PocketNet papers' exact parameter counts, forward shapes, errors, and that every network learns."""

import pytest
import torch

from common.networks import ARCHS, count_parameters, get_network, level_widths

# (arch, kwargs, our exact count, paper's figure in millions, decimals the paper rounds to)
TABLE_I = [
    ("unet", {}, 90_486_274, 90.5, 1),
    ("unet", {"pocket": True}, 763_010, 0.8, 1),
    ("resnet", {}, 91_895_074, 91.9, 1),
    ("resnet", {"pocket": True}, 779_810, 0.8, 1),
    ("densenet", {}, 135_896_162, 135.9, 1),
    ("densenet", {"pocket": True}, 1_259_042, 1.3, 1),
    ("hrnet", {}, 6_492_162, 6.5, 1),
    ("hrnet", {"pocket": True}, 698_242, 0.7, 1),
    ("nnunet", {}, 31_190_210, 31.2, 1),
    ("nnunet", {"pocket": True}, 762_306, 0.8, 1),
]


@pytest.mark.parametrize("arch,kwargs,count,paper,decimals", TABLE_I)
def test_table_i_counts(arch, kwargs, count, paper, decimals):
    """Long paper, Table I: 3D, 1 channel, 2 classes, 32 initial features, depth 5 (128^3 patch)."""
    n = count_parameters(get_network(arch, 3, 1, 2, init_filters=32, depth=5, **kwargs))
    assert n == count
    assert round(n / 1e6, decimals) == paper


def test_table_ii_classifier_counts():
    """Long paper, Table II: 2D 256^2 classifier, 16 initial features, 4 poolings, no normalisation."""
    full = count_parameters(get_network("classifier", 2, 1, 2, 16, 4, style="short"))
    pocket = count_parameters(get_network("classifier", 2, 1, 2, 16, 4, pocket=True, style="short"))
    assert (full, pocket) == (1_178_994, 21_074)
    assert round(full / 1e6, 1) == 1.2 and round(pocket / 1e6, 2) == 0.02


# Table IV: stop doubling after level L. 60.0 and 24.3 are truncated in the paper, 8.40 rounded, and
# 2.60 matches no variant of the authors' code (2.64M): we assert our counts and the agreement we have.
TABLE_IV = [(5, 90_486_274, 90.5, 1), (4, 60_074_498, 60.0, 1), (3, 24_352_514, 24.3, 1),
            (2, 8_390_402, 8.40, 1), (1, 2_640_834, 2.60, 2), (0, 763_010, 0.80, 1)]


@pytest.mark.parametrize("level,count,paper,decimals", TABLE_IV)
def test_table_iv_depth_ablation(level, count, paper, decimals):
    n = count_parameters(get_network("unet", 3, 1, 2, 32, 5, double_until=level))
    assert n == count
    scale = 10**decimals
    rounded, truncated = round(n / 1e6, decimals), int(n / 1e6 * scale) / scale
    if level == 1:  # the paper's 2.60 is off by 0.04M from every variant of the authors' code
        assert abs(n / 1e6 - paper) < 0.05
    else:
        assert paper in (rounded, truncated)


def test_double_until_is_the_same_network_as_full_and_pocket():
    assert level_widths(32, 5, double_until=5) == level_widths(32, 5) == [32, 64, 128, 256, 512, 1024]
    assert level_widths(32, 5, double_until=0) == level_widths(32, 5, pocket=True) == [32] * 6
    assert level_widths(32, 5, max_filters=320) == [32, 64, 128, 256, 320, 320]


# Short paper, 3D NFBS on 5-slice slabs: 16 initial features, depth 4, (1,2,2) pooling, no norm.
SHORT_3D = [("unet", 5_470_850, 150_066, 5.5, 0.150), ("resnet", 5_470_850, 150_066, 5.5, 0.150),
            ("densenet", 8_127_266, 241_282, 8.1, 0.241)]


@pytest.mark.parametrize("arch,full,pocket,paper_full,paper_pocket", SHORT_3D)
def test_short_paper_3d_counts(arch, full, pocket, paper_full, paper_pocket):
    kw = {"style": "short", "scale": (1, 2, 2)}
    nf = count_parameters(get_network(arch, 3, 1, 2, 16, 4, **kw))
    npk = count_parameters(get_network(arch, 3, 1, 2, 16, 4, pocket=True, **kw))
    assert (nf, npk) == (full, pocket)
    assert round(nf / 1e6, 1) == paper_full and round(npk / 1e6, 3) == paper_pocket


def test_nnunet_is_monai_dynunet():
    from monai.networks.nets import DynUNet

    assert isinstance(get_network("nnunet", 3, 1, 2, pocket=True), DynUNet)


SEG_ARCHS = [a for a in ARCHS if a != "classifier"]


@pytest.mark.parametrize("pocket", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("arch", SEG_ARCHS)
def test_segmenter_forward_shapes(arch, dims, pocket):
    net = get_network(arch, dims, 2, 3, init_filters=4, depth=3, pocket=pocket).eval()
    x = torch.randn(2, 2, *([16] * dims))
    with torch.no_grad():
        assert net(x).shape == (2, 3, *([16] * dims))


@pytest.mark.parametrize("pocket", [False, True])
@pytest.mark.parametrize("dims", [2, 3])
def test_classifier_forward_shapes(dims, pocket):
    net = get_network("classifier", dims, 1, 2, init_filters=4, depth=3, pocket=pocket, style="short").eval()
    with torch.no_grad():
        assert net(torch.randn(3, 1, *([24] * dims))).shape == (3, 2)


def test_slab_scale_keeps_slices():
    net = get_network("unet", 3, 1, 2, 4, 3, style="short", scale=(1, 2, 2)).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 5, 32, 32)).shape == (1, 2, 5, 32, 32)


@pytest.mark.parametrize("arch", ["unet", "densenet", "hrnet", "nnunet"])
def test_torchscript_export(arch):
    net = get_network(arch, 3, 1, 2, 4, 3, pocket=True).eval()
    x = torch.randn(1, 1, 16, 16, 16)
    scripted = torch.jit.script(net)
    torch.testing.assert_close(scripted(x), net(x))


def test_unknown_arch_lists_valid_ones():
    with pytest.raises(ValueError, match="valid archs: unet, resnet, densenet, hrnet, nnunet, classifier, elunet.$"):
        get_network("vnet", 3, 1, 2)


def test_bias_false_drops_only_the_3x3_conv_biases():
    for arch in ("unet", "resnet", "densenet"):
        with_bias = get_network(arch, 2, 1, 2, init_filters=4, depth=2)
        plain = get_network(arch, 2, 1, 2, init_filters=4, depth=2, bias=False)
        convs = [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
        assert convs and all(m.bias is None for m in convs), arch
        assert count_parameters(with_bias) - count_parameters(plain) == sum(m.out_channels for m in convs), arch


@pytest.mark.parametrize("arch,size,multiple", [("unet", 20, 8), ("densenet", 12, 8), ("hrnet", 12, 8)])
def test_indivisible_size_names_size_and_multiple(arch, size, multiple):
    net = get_network(arch, 3, 1, 2, 4, 3)
    with pytest.raises(ValueError, match=rf"\[{size}, 16, 16\].*multiple of \[{multiple}, {multiple}, {multiple}\]"):
        net(torch.randn(1, 1, size, 16, 16))


def test_bad_settings_are_explained():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        get_network("unet", 3, 1, 2, depth=0)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        get_network("unet", 1, 1, 2)
    with pytest.raises(ValueError, match="valid styles"):
        get_network("unet", 3, 1, 2, style="keras")
    with pytest.raises(ValueError, match="pocket=True means double_until=0"):
        get_network("unet", 3, 1, 2, pocket=True, double_until=2)


@pytest.mark.parametrize("arch", SEG_ARCHS)
def test_a_few_steps_lower_the_loss(arch):
    """Twenty Adam steps on one tiny batch (a bright square to segment) must reduce the L2-Dice loss."""
    from common.losses import loss_for_arch

    torch.manual_seed(0)
    net = get_network(arch, 2, 1, 2, init_filters=8, depth=2, pocket=True)
    label = torch.zeros(2, 1, 16, 16)
    label[:, :, 4:12, 4:12] = 1
    image = label * 2 + 0.3 * torch.randn_like(label)
    loss_fn = loss_for_arch(arch)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = loss_fn(net(image), label)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], losses
