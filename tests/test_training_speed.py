"""The fast training paths compute what the plain one does: channels-last, torch.compile and
bf16 autocast against eager NCHW fp32, on the same batches from the same weights."""

import shutil

import pytest
import torch

from alexsuite.data import transforms
from alexsuite.data.datasets import ArrayDataset
from alexsuite.devices import native_bf16
from alexsuite.errors import ConfigError
from alexsuite.models.alexnet import create_model
from alexsuite.training import speed
from alexsuite.training.config import TrainConfig
from alexsuite.training.engine import TrainingParts, train_one_epoch


def _data(n=64):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    # a learnable signal: the class sets the brightness of one quadrant
    labels = torch.arange(n) % 4
    for c in range(4):
        images[labels == c, :, (c // 2) * 16 : (c // 2) * 16 + 16, (c % 2) * 16 : (c % 2) * 16 + 16] //= 3
    return ArrayDataset(images, labels, ["a", "b", "c", "d"], "quadrants")


def _train(channels_last=False, amp=False, compile="off", epochs=2):
    """Per-step losses and final weights of a few steps (dropout on) from seed 0."""
    torch.manual_seed(0)
    model = speed.to_memory_format(create_model("alexnet-small", 4), channels_last)
    trained = speed.compiled(model, model, compile)
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=5e-4)
    pre = transforms.Preprocess(32, 28, (0.5,) * 3, (0.25,) * 3, (0.02, 0.01, 0.005))
    parts = TrainingParts.plain(model, opt, pre)
    parts.model = trained
    cfg = TrainConfig(batch_size=16, seed=0, workers=0, amp=amp, channels_last=channels_last)
    losses = []
    for epoch in range(epochs):
        train_one_epoch(parts, _data(), cfg, epoch, on_batch=lambda n, loss: losses.append(loss))
    return losses, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _close(a, b, atol):
    return all(torch.allclose(a[k], b[k], atol=atol, rtol=1e-3) for k in a)


def test_channels_last_trains_the_numbers_nchw_trains():
    losses, weights = _train()
    cl_losses, cl_weights = _train(channels_last=True)
    assert cl_losses == pytest.approx(losses, rel=1e-4)
    assert _close(weights, cl_weights, atol=1e-5)
    torch.manual_seed(0)
    start = create_model("alexnet-small", 4).state_dict()
    assert not _close(start, weights, atol=1e-3)  # the steps moved the weights: not two untouched nets


def test_bf16_autocast_follows_fp32():
    losses, weights = _train()
    bf_losses, bf_weights = _train(channels_last=True, amp=True)
    assert bf_losses == pytest.approx(losses, rel=0.03)
    assert _close(weights, bf_weights, atol=5e-3)


needs_compiler = pytest.mark.skipif(not shutil.which("g++"), reason="inductor compiles C++ on a CPU")


@needs_compiler
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_compiled_lrn_gives_the_eager_losses_and_weights(amp):
    losses, weights = _train(channels_last=True, amp=amp)
    c_losses, c_weights = _train(channels_last=True, amp=amp, compile="lrn")
    # under bf16 the two round differently (inductor keeps x*x in fp32): bf16's tolerance
    assert c_losses == pytest.approx(losses, rel=3e-2 if amp else 1e-4)
    assert _close(weights, c_weights, atol=5e-3 if amp else 1e-4)


@pytest.mark.slow
@needs_compiler
def test_compiled_model_gives_the_eager_losses_and_weights():
    import torch._inductor.config as inductor

    losses, weights = _train(channels_last=True)
    with inductor.patch(fallback_random=True):  # eager's dropout masks, so the two are comparable
        c_losses, c_weights = _train(channels_last=True, compile="model")
    assert c_losses == pytest.approx(losses, rel=1e-4)
    assert _close(weights, c_weights, atol=1e-4)


def test_auto_compiles_the_lrn_only_where_it_pays_back():
    cpu = torch.device("cpu")
    assert speed.compile_mode("auto", cpu, images=600, crop=28)[0] == "off"  # a test's run
    assert speed.compile_mode("auto", cpu, images=60_000 * 10, crop=28)[0] == ("lrn" if shutil.which("g++") else "off")
    assert speed.compile_mode("auto", cpu, images=1_280, crop=227)[0] == ("lrn" if shutil.which("g++") else "off")


def test_compile_falls_back_to_eager_without_a_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler")
    cpu = torch.device("cpu")
    mode, warning = speed.compile_mode("lrn", cpu)
    assert mode == "off" and "C++ compiler" in warning
    assert speed.compile_mode("auto", cpu, images=10**6)[0] == "off"
    with pytest.raises(ConfigError, match="--compile model needs"):
        speed.compile_mode("model", cpu)
    assert speed.compile_mode("off", cpu) == ("off", None)


def test_precision_says_what_the_run_computes_in():
    cpu = torch.device("cpu")
    native = native_bf16(cpu)
    text, warning = speed.precision(True, cpu)
    if native:
        assert text == f"bf16 autocast ({native})" and warning is None
        assert "--amp trains faster" in speed.precision(False, cpu)[0]
    else:
        assert "no native bf16" in warning and "leave --amp out" in warning
        assert speed.precision(False, cpu) == ("fp32", None)
