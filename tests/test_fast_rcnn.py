"""Fast R-CNN's pieces on real tensors and a real (tiny) training run: RoI sampling, the
multi-task loss, the box layer's unnormalisation, flips, and resuming."""

import pytest
import torch
from torch import nn

from alexsuite.boxes import encode, mirror
from alexsuite.data.detection_sets import read_detection_set
from alexsuite.detection import fast_rcnn
from alexsuite.detection.fast_rcnn import BOX_STDS, FastRCNNSettings, RoIs
from alexsuite.detection.features import image_loader
from alexsuite.models.checkpoint import load_model


def _rois(n_fg: int, n_bg: int, n_easy: int) -> RoIs:
    overlap = torch.cat([torch.full((n_fg,), 0.7), torch.full((n_bg,), 0.3), torch.full((n_easy,), 0.05)])
    n = len(overlap)
    return RoIs(torch.zeros(n, 4), (overlap >= 0.5).long(), overlap, torch.zeros(n, 4))


def test_sampling_takes_a_quarter_objects_and_background_from_its_band_without_replacement():
    s = FastRCNNSettings()
    pick = fast_rcnn.sample_rois(_rois(40, 100, 500), s, torch.Generator().manual_seed(0))
    overlap = _rois(40, 100, 500).overlap[pick]
    assert len(pick) == 64 and len(set(pick.tolist())) == 64
    assert int((overlap >= 0.5).sum()) == 16 and bool(((overlap >= 0.1) & (overlap < 0.5)).sum() == 48)
    # few objects and little background: all of both, never an RoI below the band
    pick = fast_rcnn.sample_rois(_rois(3, 10, 500), s, torch.Generator().manual_seed(0))
    assert len(pick) == 13 and bool((_rois(3, 10, 500).overlap[pick] >= 0.1).all())


def test_multitask_loss_is_log_loss_plus_smooth_l1_on_the_true_class_box():
    scores = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    deltas = torch.zeros(2, 12)
    deltas[1, 8:12] = torch.tensor([0.5, -2.0, 0.0, 0.0])  # class 2's box of the object RoI
    targets = torch.zeros(2, 4)
    labels = torch.tensor([0, 2])
    cls, loc = fast_rcnn.multitask_loss(scores, deltas, labels, targets, box_weight=1.0)
    expected_cls = (-torch.log_softmax(scores, 1)[[0, 1], [0, 2]]).mean()
    assert torch.isclose(cls, expected_cls)
    # smooth L1: 0.5 x^2 below 1, |x| - 0.5 above; summed, then over the batch's 2 RoIs
    assert torch.isclose(loc, torch.tensor((0.5 * 0.25 + 1.5) / 2))


def test_the_saved_box_layer_gives_encode_deltas_and_flips_negate_only_the_x_shift():
    box = nn.Linear(8, 4 * 3)
    x = torch.randn(5, 8)
    w, b = fast_rcnn.unnormalised(box)
    assert torch.allclose(x @ w.T + b, box(x) * torch.tensor(BOX_STDS).repeat(3), atol=1e-6)
    props, gt = torch.tensor([[10.0, 20, 50, 70]]), torch.tensor([[14.0, 18, 60, 66]])
    flipped = encode(mirror(props, 100), mirror(gt, 100))
    assert torch.allclose(flipped, encode(props, gt) * torch.tensor([-1.0, 1, 1, 1]))


def test_image_scale_follows_the_paper_scaled_to_the_net():
    # 600 px shorter side at 227 px -> 74 at 28 px; the longer side capped at 1000 -> 123
    assert abs(fast_rcnn.image_scale(300, 480, 600, 1000, 28) - 600 * 28 / 227 / 300) < 1e-9
    assert abs(fast_rcnn.image_scale(100, 1000, 600, 1000, 28) - 1000 * 28 / 227 / 1000) < 1e-9


def _jittered(gt: torch.Tensor, g: torch.Generator, n: int = 40) -> torch.Tensor:
    """Proposals around each object and anywhere in a 128 x 104 image."""
    near = gt.repeat(n // max(1, len(gt)), 1) + torch.randn(n // max(1, len(gt)) * len(gt), 4, generator=g) * 8
    anywhere = torch.rand(n, 2, generator=g) * torch.tensor([88.0, 64.0])
    far = torch.cat([anywhere, anywhere + 20 + torch.rand(n, 2, generator=g) * 20], 1)
    boxes = torch.cat([near, far])
    boxes[:, 2:] = torch.maximum(boxes[:, 2:], boxes[:, :2] + 4)
    return boxes


def _training_inputs(voc_scenes, trained_run):
    data = read_detection_set(voc_scenes, "train")
    index = {c: i for i, c in enumerate(data.classes)}
    truths = [(a.boxes, torch.tensor([index[lab] for lab in a.labels])) for a in data.items]
    g = torch.Generator().manual_seed(0)
    proposals = [_jittered(t[0], g) for t in truths]
    return data, truths, proposals, image_loader(data.items)


def test_training_learns_and_scores_every_box(voc_scenes, trained_run):
    data, truths, proposals, load = _training_inputs(voc_scenes, trained_run)
    s = FastRCNNSettings(iterations=40, lr=0.01)
    k = len(data.classes)
    straight = load_model(trained_run)
    losses = []
    box_a, stats = fast_rcnn.train(
        straight.model, straight.preprocess, proposals, truths, load, k, s, on_step=lambda n, loss: losses.append(loss)
    )
    assert stats["iterations"] == 40 and stats["object_rois"] > 0 and len(losses) == 40
    # the log loss starts at ln(K + 1) (uniform heads) and the running mean falls well below it
    assert losses[0] > 1.2 and losses[-1] < 0.8 * losses[0]
    frozen_conv1 = straight.model.body[0].weight
    assert torch.equal(frozen_conv1, load_model(trained_run).model.body[0].weight)  # conv1 kept (S and M nets)

    w, bias = fast_rcnn.unnormalised(box_a)
    image = load(0)
    probs, boxes = fast_rcnn.score_rois(straight.model, w, bias, image, proposals[0], straight.preprocess, s)
    assert probs.shape == (len(proposals[0]), k + 1) and boxes.shape == (len(proposals[0]), k + 1, 4)
    assert torch.allclose(probs.sum(1), torch.ones(len(probs)), atol=1e-5)
    # two scales: each box read at one of them, the same shapes
    multi = FastRCNNSettings(scales=(480, 864))
    probs2, _ = fast_rcnn.score_rois(straight.model, w, bias, image, proposals[0], straight.preprocess, multi)
    assert probs2.shape == probs.shape and not torch.allclose(probs2, probs)


def test_an_interrupted_run_continues_to_the_same_weights(voc_scenes, trained_run, tmp_path):
    data, truths, proposals, load = _training_inputs(voc_scenes, trained_run)
    k = len(data.classes)
    s = FastRCNNSettings(iterations=12, lr=0.01, checkpoint_every=4)

    def run(state, stop_after=None):
        loaded = load_model(trained_run)
        steps = []

        def on_step(n, loss):
            steps.append(loss)
            if stop_after is not None and len(steps) == stop_after:
                raise KeyboardInterrupt

        try:
            box, _ = fast_rcnn.train(
                loaded.model, loaded.preprocess, proposals, truths, load, k, s, state_file=state, on_step=on_step
            )
        except KeyboardInterrupt:
            return None, None
        return loaded.model, box

    straight, box_a = run(tmp_path / "a.pt")
    assert run(tmp_path / "b.pt", stop_after=6) == (None, None)  # saved at 4, stopped in the 6th
    assert torch.load(tmp_path / "b.pt", weights_only=True)["iteration"] == 4
    resumed, box_b = run(tmp_path / "b.pt")
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[n], b[n]) for n in a) and torch.equal(box_a.weight, box_b.weight)


def test_truncated_svd_keeps_the_layers_places_and_approximates_them():
    from alexsuite.detection import svd
    from alexsuite.errors import ConfigError
    from alexsuite.models.alexnet import build_small

    torch.manual_seed(0)
    model = build_small(num_classes=4).eval()
    assert svd.default_ranks(1024) == (256, 64) and svd.default_ranks(4096) == (1024, 256)
    x = torch.randn(3, model.pool5_dim)
    fc6, fc7 = model.classifier[0], model.classifier[3]
    for layer in (fc6, fc7):  # every singular value kept: the same function
        v = torch.randn(3, layer.in_features)
        assert torch.allclose(svd.factor(layer, min(layer.weight.shape))(v), layer(v), atol=1e-4)
    # a rank that saves no multiply-adds keeps the layer whole (fc6, 576 -> 1024: up to rank 368)
    fc7_only = svd.compressed(model, (1024, 128))
    assert isinstance(fc7_only.classifier[0], torch.nn.Linear) and isinstance(
        fc7_only.classifier[3], torch.nn.Sequential
    )
    assert fc7_only.pool5_dim == model.pool5_dim and fc7_only.head(x, "fc7").shape == model.head(x, "fc7").shape
    assert isinstance(svd.compressed(model, (368, 128)).classifier[0], torch.nn.Sequential)
    assert isinstance(svd.compressed(model, (369, 128)).classifier[0], torch.nn.Linear)
    small = svd.compressed(model, (64, 16))

    def size(m):
        return sum(p.numel() for p in m.classifier.parameters())

    assert size(small) < size(model) / 4
    assert small.head(x, "fc7").shape == model.head(x, "fc7").shape
    # fewer directions, larger error, and the best rank-r error is the tail of the singular values
    w = model.classifier[0].weight.detach().double()
    s = torch.linalg.svdvals(w)
    err = torch.linalg.matrix_norm(w - (small.classifier[0][1].weight @ small.classifier[0][0].weight).double())
    assert torch.isclose(err, s[64:].pow(2).sum().sqrt(), rtol=1e-4)
    for bad in ("1024", "0,4", "a,b", "2000,10"):
        with pytest.raises(ConfigError, match="--svd"):
            svd.parse_ranks(bad, 1024)
