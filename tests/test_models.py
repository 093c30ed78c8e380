import pytest
import torch
from torch import nn

from alexsuite.errors import ConfigError
from alexsuite.models.alexnet import LocalResponseNorm, count_parameters, create_model, load_torchvision_state_dict


def test_paper_alexnet_has_the_papers_parameter_count_and_shapes():
    model = create_model("alexnet", 1000).eval()
    assert count_parameters(model) == 60_965_224  # Krizhevsky et al. 2012: "60 million parameters"
    x = torch.randn(2, 3, 227, 227)
    with torch.no_grad():
        assert model(x).shape == (2, 1000)
        assert model.features(x, "conv5").shape == (2, 256, 13, 13)
        assert model.features(x, "pool5").shape == (2, 256 * 6 * 6)
        assert model.features(x, "fc6").shape == (2, 4096)
        fc7 = model.features(x, "fc7")
    assert fc7.shape == (2, 4096) and (fc7 >= 0).all()  # post-ReLU, as R-CNN used it


def test_paper_alexnet_layers_follow_the_paper():
    model = create_model("alexnet", 1000)
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # the two-GPU split of Figure 2
    assert convs[0].kernel_size == (11, 11) and convs[0].stride == (4, 4)
    pools = [m for m in model.body if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3 and all(p.kernel_size == 3 and p.stride == 2 for p in pools)
    lrns = [i for i, m in enumerate(model.body) if isinstance(m, LocalResponseNorm)]
    assert lrns == [2, 6]  # after conv1 and conv2 (each after its ReLU), before pooling
    drops = [m.p for m in model.classifier if isinstance(m, nn.Dropout)]
    assert drops == [0.5, 0.5]


def test_paper_init_biases_one_where_the_paper_says():
    model = create_model("alexnet", 1000)
    convs = [m for m in model.body if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.classifier if isinstance(m, nn.Linear)]
    ones = [convs[1], convs[3], convs[4], fcs[0], fcs[1]]
    zeros = [convs[0], convs[2], fcs[2]]
    assert all(bool((m.bias == 1).all()) for m in ones)
    assert all(bool((m.bias == 0).all()) for m in zeros)
    assert abs(float(fcs[0].weight.detach().std()) - 0.01) < 1e-3


def test_lrn_is_torchs_lrn_and_the_papers_formula():
    x = torch.randn(3, 12, 5, 5, dtype=torch.float64, requires_grad=True)
    ours = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    ref = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)
    assert torch.allclose(ours(x), ref(x), atol=1e-12)
    (g1,) = torch.autograd.grad(ours(x).sum(), x)
    (g2,) = torch.autograd.grad(ref(x).sum(), x)
    assert torch.allclose(g1, g2, atol=1e-12)
    # Paper: b_c = a_c / (2 + 1e-4 * sum_{c-2..c+2} a^2)^0.75 (alpha not divided by n).
    c = 6
    window = x[:, c - 2 : c + 3].pow(2).sum(1)
    expected = x[:, c] / (2 + 1e-4 * window) ** 0.75
    assert torch.allclose(create_model("alexnet", 10).body[2](x)[:, c], expected, atol=1e-12)


@pytest.mark.parametrize("beta", [0.75, 0.6])
def test_lrn_gradient_written_out_matches_autograd(beta):
    x = torch.randn(2, 9, 4, 4, dtype=torch.float64, requires_grad=True)
    lrn = LocalResponseNorm(5, alpha=0.3, beta=beta, k=1.5)  # a large alpha: the window matters
    assert torch.autograd.gradcheck(lrn, (x,))
    assert torch.allclose(lrn(x), nn.LocalResponseNorm(5, alpha=0.3, beta=beta, k=1.5)(x), atol=1e-12)


def test_lrn_under_bf16_keeps_its_denominator_in_fp32():
    # ReLU-sized activations put d at ~2.006, which bf16 (spacing 1/64 at 2) rounds to k = 2:
    # a systematic 0.2% error that survives averaging, unlike the output's own rounding.
    x = (3.5 + 0.3 * torch.randn(4, 16, 8, 8)).bfloat16()
    ref = nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x.float())
    out = LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(x)
    assert out.dtype == torch.bfloat16
    assert abs(float((out.float() / ref).mean()) - 1) < 5e-4


@pytest.mark.parametrize("size", [28, 32, 64])
def test_small_alexnet_takes_28_to_64_px(size):
    model = create_model("alexnet-small", 10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 10)
        assert model.features(torch.randn(2, 3, size, size), "fc7").shape == (2, 1024)
    assert sum(isinstance(m, LocalResponseNorm) for m in model.body) == 2
    assert [m.groups for m in model.body if isinstance(m, nn.Conv2d)] == [1, 2, 1, 2, 2]


def test_torchvision_weights_load_and_give_torchvisions_outputs():
    from torchvision.models import alexnet as tv_alexnet

    torch.manual_seed(0)
    reference = tv_alexnet(weights=None).eval()
    ours = create_model("alexnet-tv", 1000).eval()
    load_torchvision_state_dict(ours, reference.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x), atol=1e-5)
        fc7_ref = reference.classifier[:6](torch.flatten(reference.avgpool(reference.features(x)), 1))
        assert torch.allclose(ours.features(x, "fc7"), fc7_ref, atol=1e-5)


def test_tanh_variant_and_unknown_names():
    model = create_model("alexnet-small", 10, activation="tanh")
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    with pytest.raises(ConfigError, match="unknown architecture"):
        create_model("vgg", 10)
    with pytest.raises(ConfigError, match="unknown layer"):
        model.features(torch.randn(1, 3, 28, 28), "fc9")


@pytest.mark.parametrize("amp", [False, True])
def test_paper_alexnet_takes_a_training_step(amp):
    from alexsuite.training.engine import autocast_for

    torch.manual_seed(0)
    model = create_model("alexnet", 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(2, 3, 227, 227), torch.tensor([1, 3])
    before = model.classifier[-1].weight.clone()
    with autocast_for(torch.device("cpu"), amp):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.classifier[-1].weight)
