"""R-CNN end to end on a tiny generated VOC set: training stages, resuming, the detector
directory, both test modes, and the region features they rest on."""

import json

import pytest
import torch

from alexsuite.data import transforms
from alexsuite.data.detection_sets import read_voc
from alexsuite.detection.config import DetectorConfig
from alexsuite.detection.detector import load_detector
from alexsuite.detection.evaluate import evaluate_detector
from alexsuite.detection.fast_rcnn import FastRCNNSettings
from alexsuite.detection.finetune import FinetuneSettings, Windows, build_windows, sample_batch
from alexsuite.detection.framing import warp_regions
from alexsuite.detection.inference import DetectSettings, run_detector
from alexsuite.detection.regions import (
    crop_shapes,
    fast_pool5,
    head_features,
    image_tensor,
    level_pool5,
    pyramid_levels,
    rcnn_pool5,
)
from alexsuite.detection.training import train_detector
from alexsuite.errors import CheckpointError, ConfigError, DataError
from alexsuite.models.checkpoint import load_model
from alexsuite.proposals import ProposalSettings

from .conftest import make_voc_scenes


def test_windows_label_proposals_by_their_best_object_and_batches_hold_a_quarter_positives():
    gt = torch.tensor([[0, 0, 10, 10], [20, 0, 40, 10]], dtype=torch.float32)
    props = torch.tensor(
        [
            [0, 0, 10, 9],  # IoU .9 with object 0 -> class 2 (+1 for background)
            [20, 0, 38, 10],  # IoU .9 with object 1 -> class 0 + 1
            [50, 50, 60, 60],
        ]
    )  # background
    w = build_windows([props], [(gt, torch.tensor([1, 0]))])
    assert w.labels.tolist() == [2, 1, 2, 1, 0]  # the two ground-truth boxes come first
    many = Windows(torch.zeros(400, dtype=torch.long), torch.zeros(400, 4), torch.tensor([1] * 100 + [0] * 300))
    picks = sample_batch(many, FinetuneSettings(), torch.Generator().manual_seed(0))
    assert len(picks) == 128 and int((many.labels[picks] > 0).sum()) == 32  # R-CNN: 32 of 128


def test_fast_mode_reads_each_box_at_the_scale_the_network_knows(trained_run):
    m = load_model(trained_run)
    pre = m.preprocess  # 28 px crops: a box is 24 px across inside its context
    boxes = torch.tensor([[0, 0, 24, 24], [0, 0, 48, 48], [0, 0, 96, 24], [0, 0, 10, 10]], dtype=torch.float32)
    # levels k: the image scaled by sqrt(2)**-k across and down, as the warp scales the box; never enlarged
    assert pyramid_levels(boxes, pre).tolist() == [[0, 0], [2, 2], [4, 0], [0, 0]]
    assert pyramid_levels(boxes, pre, step=2.0).tolist() == [[0, 0], [1, 1], [2, 0], [0, 0]]
    # a box that fills the image at the right scale gives rcnn and fast features that agree
    image = torch.randint(0, 255, (3, 24, 24), dtype=torch.uint8)
    a = rcnn_pool5(m.model, image, boxes[:1], pre)
    b = fast_pool5(m.model, image, boxes[:1], pre)
    assert a.shape == b.shape and torch.cosine_similarity(a, b).item() > 0.8


def test_a_square_region_shows_a_tall_object_narrow_in_both_modes(trained_run):
    """--region-shape square: the crop holds the tightest square around the box, so a tall bar
    stays a narrow bar with the image beside it, where warp stretches it across the crop; fast
    mode pools the same window from conv5 (levels chosen by the window's size)."""
    from alexsuite.detection.framing import Framing

    m = load_model(trained_run)
    pre = m.preprocess
    image = torch.zeros(3, 120, 120, dtype=torch.uint8)
    image[:, 20:100, 50:70] = 255  # a 20 x 80 white bar
    bar = torch.tensor([[50.0, 20.0, 70.0, 100.0]])
    square, warp = Framing("square", 0), Framing("warp", 0)
    black = warp_regions(torch.zeros_like(image), bar, pre, square)[0].mean(0)
    white = warp_regions(image, bar, pre, square)[0].mean(0) > black + 0.5
    assert white[:, pre.crop_size // 2].all()  # the bar down the middle...
    assert not white[:, : pre.crop_size // 4].any() and not white[:, -(pre.crop_size // 4) :].any()  # ...dark beside it
    assert (warp_regions(image, bar, pre, warp)[0] > 0).all()  # warp: white edge to edge
    # the 80 px square is 28 px at level 3 (80 / 2**1.5 = 28.3) both ways; warp's 20 px width is
    # read at level 0, since the image is never enlarged
    assert pyramid_levels(bar, pre, framing=square).tolist() == [[3, 3]]
    assert pyramid_levels(bar, pre, framing=warp).tolist() == [[0, 3]]
    # fast mode RoI-pools each framing's own window at that level; comparing its features with
    # rcnn mode's on this tiny net is left to the benchmarks: which read lies nearer changed
    # with the CPU's float kernels (an AVX512 machine trains the fixture to other weights)
    x = transforms.normalize(image[None], pre)
    grid = crop_shapes(m.model, pre)[0]
    with torch.no_grad():
        fast_square = fast_pool5(m.model, image, bar, pre, framing=square)
        fast_warp = fast_pool5(m.model, image, bar, pre, framing=warp)
        assert torch.allclose(fast_square, level_pool5(m.model, x, square.windows(bar, pre.crop_size), (3, 3), grid))
        assert torch.allclose(fast_warp, level_pool5(m.model, x, warp.windows(bar, pre.crop_size), (0, 3), grid))
    assert not torch.allclose(fast_square, fast_warp, atol=1e-3)


def test_a_joined_framing_reads_every_view_and_puts_their_features_side_by_side(trained_run):
    """--region-shape warp+square: pool5 and fc7 of each box are its warp's and its square's,
    in that order, in both modes (fast mode pools both views from one pyramid)."""
    from alexsuite.detection.framing import Framing

    m = load_model(trained_run)
    pre, model = m.preprocess, m.model.eval()
    image = torch.randint(0, 255, (3, 90, 120), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    boxes = torch.tensor([[10.0, 10.0, 40.0, 80.0], [50.0, 20.0, 110.0, 40.0], [0.0, 0.0, 119.0, 89.0]])
    joined = Framing("warp+square", (16, 0)).check()
    assert joined.views == (Framing("warp", 16), Framing("square", 0)) and joined.name == "warp16+square0"
    for read in (rcnn_pool5, fast_pool5):
        with torch.no_grad():
            both = read(model, image, boxes, pre, framing=joined)
            apart = [read(model, image, boxes, pre, framing=v) for v in joined.views]
        assert both.shape == (3, 2 * model.pool5_dim)
        assert torch.allclose(both, torch.cat(apart, 1), atol=1e-5)
        fc7 = head_features(model, both, "fc7")
        assert torch.allclose(fc7, torch.cat([head_features(model, a, "fc7") for a in apart], 1), atol=1e-5)
        assert read(model, image, boxes[:0], pre, framing=joined).shape == (0, 2 * model.pool5_dim)
    for bad in (Framing("warp+warp"), Framing("warp+square", (16, 0, 4)), Framing("warp", (16, 0))):
        with pytest.raises(ConfigError):
            bad.check()


def test_fast_mode_pads_a_level_to_hold_windows_that_leave_the_image():
    from alexsuite.detection.regions import _pad_to_cover

    level = torch.ones(1, 3, 20, 30)
    windows = torch.tensor([[-5.0, -9.0, 25.0, 40.0], [2.0, 3.0, 10.0, 12.0]])
    padded, shift = _pad_to_cover(level, windows, stride=4)
    assert shift.tolist() == [8, 12, 8, 12]  # whole conv5 cells left and top
    assert padded.shape[-2:] == (12 + 20 + 20, 8 + 30)  # down to y 40, x already inside
    moved = windows + shift
    assert (
        (moved[:, :2] >= 0).all()
        and (moved[:, 2] <= padded.shape[-1]).all()
        and (moved[:, 3] <= padded.shape[-2]).all()
    )
    assert padded[..., 12:32, 8:38].eq(1).all() and padded.sum() == level.sum()  # the image, then the mean (0)
    inside, none = _pad_to_cover(level, windows[1:], stride=4)
    assert inside is level and none == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fast_mode_on_cuda_gives_the_cpu_features(trained_run):
    """On CUDA fast mode runs its pyramid without cuDNN (regions.without_cudnn): same numbers,
    and the user's cuDNN settings are back afterwards."""
    m = load_model(trained_run)
    image = torch.randint(0, 255, (3, 90, 130), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 0, 24, 24], [10, 5, 80, 60], [30, 20, 130, 44]], dtype=torch.float32)
    cpu = fast_pool5(m.model.eval(), image, boxes, m.preprocess)
    before, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, True
    try:
        gpu = fast_pool5(m.model.cuda(), image, boxes, m.preprocess)
        assert torch.backends.cudnn.enabled and torch.backends.cudnn.benchmark
    finally:
        torch.backends.cudnn.benchmark = before
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-3, atol=1e-3)


def test_fine_tuning_can_read_windows_as_fast_mode_does(trained_run):
    """--fast-fraction trains on context_crop_pool5: a window warped with image around it,
    RoI-pooled from the middle of its conv5 map. For a window at the network's own scale that
    is fast mode's pool5 (conv5 of the whole image) far more closely than the plain warp is."""
    from alexsuite.detection.regions import context_crop_pool5, fast_margin

    m = load_model(trained_run)
    pre, model = m.preprocess, m.model.eval()
    g = torch.Generator().manual_seed(0)
    image = (torch.rand(3, 120, 120, generator=g) * 255).to(torch.uint8)
    boxes = torch.tensor([[48.0, 48.0, 72.0, 72.0], [40.0, 50.0, 64.0, 74.0]])  # 24 px: level (0, 0)
    with torch.no_grad():
        fast = fast_pool5(model, image, boxes, pre)
        crops = warp_regions(image, boxes, pre, margin=fast_margin(pre.crop_size))
        assert crops.shape[-1] == pre.crop_size + 2 * fast_margin(pre.crop_size)
        context = context_crop_pool5(model, crops, pre, fast_margin(pre.crop_size))
        plain = rcnn_pool5(model, image, boxes, pre)
    assert torch.cosine_similarity(context, fast).min() > 0.85, torch.cosine_similarity(plain, fast)
    assert torch.cosine_similarity(context, fast).min() > torch.cosine_similarity(plain, fast).max()


def test_fast_r_cnn_reading_takes_windows_of_one_image_and_level_and_reads_them_as_fast_mode_does(trained_run):
    """--image-fraction: each group is one image's windows at one pyramid level (a quarter
    of them objects), and its pool5, from that image's whole conv5 map, is fast mode's own,
    mirrored with the image when flipped; the loss reaches the first convolution."""
    from alexsuite.detection.finetune import image_group_pool5, sample_image_groups
    from alexsuite.detection.framing import Framing

    m = load_model(trained_run)
    pre, model = m.preprocess, m.model.eval()
    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(3, 90 + 30 * i, 140, generator=g) * 255).to(torch.uint8) for i in range(2)]
    objects = [torch.tensor([[20.0, 20.0, 44.0, 44.0]]), torch.tensor([[30.0, 10.0, 80.0, 100.0]])]
    proposals = []
    for obj in objects:  # around each object (some IoU >= 0.5, some not) and elsewhere, at many sizes
        shifts = torch.randint(-12, 13, (60, 4), generator=g).float()
        proposals.append(torch.cat([obj + shifts, torch.tensor([[0.0, 0.0, 30.0, 30.0], [60.0, 5.0, 130.0, 40.0]])]))
    windows = build_windows(proposals, [(obj, torch.tensor([0])) for obj in objects])
    framing = Framing("warp+square", (16, 0))
    levels = torch.stack([pyramid_levels(windows.boxes, pre, framing=v) for v in framing.views])
    groups = sample_image_groups(windows, levels, 12, 8, 0.25, g)
    assert {v for v, _, _ in groups} == {0, 1}
    for view, level, picks in groups:
        assert len(picks) == 8 and len(set(windows.image[picks].tolist())) == 1
        assert (levels[view, picks] == torch.tensor(level)).all()
        objects_in_image_level = windows.labels[
            (windows.image == windows.image[picks[0]]) & (levels[view] == torch.tensor(level)).all(1)
        ]
        if (objects_in_image_level == 0).any():
            assert int((windows.labels[picks] > 0).sum()) == 2  # fg_fraction 0.25 of 8
    view, level, picks = groups[0]
    grid = model.conv5(torch.zeros(1, 3, pre.crop_size, pre.crop_size)).shape[-1]  # a warped crop's conv5 side
    image = images[int(windows.image[picks[0]])]
    boxes = windows.boxes[picks]
    with torch.no_grad():
        read = image_group_pool5(
            model,
            windows,
            picks,
            level,
            framing.views[view],
            images.__getitem__,
            pre,
            "cpu",
            flip=False,
            colour=None,
            grid=grid,
        )
        fast = fast_pool5(model, image, boxes, pre, framing=framing.views[view])
        flipped = image_group_pool5(
            model,
            windows,
            picks,
            level,
            framing.views[view],
            images.__getitem__,
            pre,
            "cpu",
            flip=True,
            colour=None,
            grid=grid,
        )
        w = image.shape[-1]
        mirrored = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
        fast_flipped = fast_pool5(model, image.flip(2), mirrored, pre, framing=framing.views[view])
    torch.testing.assert_close(read, fast, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(flipped, fast_flipped, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(flipped, read, atol=1e-3)
    model.zero_grad()
    image_group_pool5(
        model.train(),
        windows,
        picks,
        level,
        framing.views[view],
        images.__getitem__,
        pre,
        "cpu",
        flip=False,
        colour=g,
        grid=grid,
    ).sum().backward()
    assert model.body[0].weight.grad.abs().sum() > 0


def test_recolouring_changes_the_windows_colours_but_not_the_mean_fill_outside_the_image():
    from alexsuite.detection.finetune import recolour

    pre = transforms.Preprocess(32, 28, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    image = torch.zeros(3, 40, 40, dtype=torch.uint8)
    image[0], image[1], image[2] = 200, 120, 40
    crops = warp_regions(image, torch.tensor([[0.0, 0.0, 39.0, 39.0]] * 4), pre)  # context reaches outside
    out = recolour(crops, pre, torch.Generator().manual_seed(0))
    outside = (crops == 0).all(1)
    assert outside.any() and (~outside).any()
    assert (out.permute(0, 2, 3, 1)[outside] == 0).all()
    raw = out * torch.tensor(pre.std)[:, None, None] + torch.tensor(pre.mean)[:, None, None]
    inside = raw.permute(0, 2, 3, 1)[~outside].mul(255)  # the photo's pixels, recoloured
    assert not torch.allclose(inside, torch.tensor([200.0, 120.0, 40.0]), atol=5)
    assert inside.min() >= 40 * 0.6 - 1 and inside.max() <= 200 * 1.4 + 1


def test_detector_finds_the_shapes_in_both_modes(trained_detector, voc_scenes):
    det = load_detector(trained_detector)
    meta = json.loads((trained_detector / "detector.json").read_text())
    assert det.classes == ["circle", "square", "stripes"] and meta["layer"] == "fc7"
    assert det.svm_weight.shape[0] == 3 and det.reg_weight.shape[0] == 3
    # the backbone loads on its own as a 4-way (background + 3) classifier
    assert load_model(trained_detector / "backbone.pt").classes[0] == "__background__"
    val = read_voc(voc_scenes, "val")
    rcnn = evaluate_detector(det, val, DetectSettings(mode="rcnn"))
    fast = evaluate_detector(det, val, DetectSettings(mode="fast"))
    assert rcnn["proposal_recall"]["recall"] >= 0.9
    assert rcnn["map"] > 0.3 and fast["map"] > 0.15  # chance is ~0.01 with ~140 boxes per image
    assert set(rcnn["per_class"]) <= {"circle", "square", "stripes"}
    assert rcnn["seconds_per_image"]["total"] > 0


def test_mirror_scores_an_image_and_its_mirror_alike(trained_detector, voc_scenes):
    """--mirror averages a proposal's features with its mirror's: a mirrored photo with
    mirrored proposals then scores exactly as the photo does, in both modes."""
    from alexsuite.data.decode import decode_image

    det = load_detector(trained_detector)
    image = image_tensor(decode_image(read_voc(voc_scenes, "val").items[0].image))
    w = image.shape[-1]
    boxes = torch.tensor([[10.0, 12.0, 60.0, 50.0], [40.0, 30.0, 100.0, 90.0], [5.0, 5.0, 30.0, 80.0]])
    mirrored = torch.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], 1)
    # the mirrored box of the mirrored photo is the same pixels, mirrored: the formula's geometry
    assert torch.allclose(
        warp_regions(image.flip(-1), mirrored, det.preprocess),
        warp_regions(image, boxes, det.preprocess).flip(-1),
        atol=1e-5,
    )
    for mode in ("rcnn", "fast"):
        _, plain, _ = det.score(image, boxes, mode)
        _, both, _ = det.score(image, boxes, mode, mirror=True)
        _, other, _ = det.score(image.flip(-1), mirrored, mode, mirror=True)
        assert torch.allclose(both, other, atol=1e-5)
        assert not torch.allclose(both, plain, atol=1e-3)  # the mirrored view was read


def test_training_again_resumes_from_the_cached_stages(trained_detector, voc_scenes, trained_run):
    metrics = json.loads((trained_detector / "metrics.json").read_text())
    cfg = DetectorConfig(
        data=str(voc_scenes),
        backbone=str(trained_run),
        finetune=FinetuneSettings(iterations=60, batch_size=64, lr=0.01, checkpoint_every=20),
        proposals=ProposalSettings(size=256, max_boxes=300),
        workers=0,
    )
    again = train_detector(cfg, trained_detector)
    assert again.metrics["finetune"]["resumed_at"] == 60  # nothing left to fine-tune
    assert again.metrics["seconds"]["features"] < metrics["seconds"]["features"] + 5
    reloaded = load_detector(trained_detector)
    assert torch.equal(reloaded.svm_weight, load_detector(trained_detector).svm_weight)


def test_the_features_stage_knows_what_it_will_write_and_refuses_a_disk_that_cannot_take_it(
    trained_detector, voc_scenes, tmp_path
):
    from alexsuite.detection.features import feature_dims, feature_disk_bytes
    from alexsuite.detection.training import _truths
    from alexsuite.errors import DiskSpaceError
    from alexsuite.fileio import check_free_space, file_sha256

    det = load_detector(trained_detector)
    items = read_voc(voc_scenes, "train").items
    truths = _truths(read_voc(voc_scenes, "train").items, det.classes)
    folders = sorted((trained_detector / "cache" / "features").iterdir())
    assert [f.name.rsplit("-", 1)[1] for f in folders] == ["fast", "rcnn"]
    # the proposals each image's features were read from, as the stage stored them
    payloads = [
        torch.load(next(folders[0].glob(f"{file_sha256(a.image)[:20]}-*.pt")), weights_only=True) for a in items
    ]
    proposals = [p["boxes"][int(p["gt"]) :] for p in payloads]
    layer_dim, pool5_dim = feature_dims(det.model, det.layer, det.framing)
    written = sum(f.stat().st_size for d in folders for f in d.iterdir())
    estimate = feature_disk_bytes(items, proposals, truths, 0.6, layer_dim, pool5_dim, [None, None])
    assert 0.9 * written < estimate < 1.1 * written
    assert feature_disk_bytes(items, proposals, truths, 0.6, layer_dim, pool5_dim, folders) == 0  # all done

    check_free_space(tmp_path / "not-yet" / "features", 1 << 20, "the features", "free some")
    with pytest.raises(DiskSpaceError, match=r"the features need about 1000000000\.0 GB and .* GB are free; free some"):
        check_free_space(tmp_path / "features", 10**18, "the features", "free some")


def test_an_unfinished_or_tampered_detector_is_refused(trained_detector, tmp_path):
    import shutil

    copy = tmp_path / "det"
    shutil.copytree(trained_detector, copy, ignore=shutil.ignore_patterns("cache"))
    (copy / "heads.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="changed since"):
        load_detector(copy)
    (copy / "detector.json").unlink()
    with pytest.raises(CheckpointError, match="no detector.json"):
        load_detector(copy)


def test_a_detector_reads_boxes_with_the_framing_it_was_trained_with(trained_detector, tmp_path):
    import shutil

    from alexsuite.detection.framing import Framing

    det = load_detector(trained_detector)
    assert det.framing == Framing("warp", 16)  # the paper's
    copy = tmp_path / "det"
    shutil.copytree(trained_detector, copy, ignore=shutil.ignore_patterns("cache"))
    meta = json.loads((copy / "detector.json").read_text())
    meta.pop("framing")  # written before framing was a setting
    (copy / "detector.json").write_text(json.dumps(meta))
    assert load_detector(copy).framing == Framing("warp", 16)
    meta["framing"] = {"shape": "square", "padding": 0}
    (copy / "detector.json").write_text(json.dumps(meta))
    square = load_detector(copy)
    assert square.framing == Framing("square", 0)
    image = torch.randint(0, 255, (3, 100, 140), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    tall = torch.tensor([[30.0, 10.0, 50.0, 90.0]])
    assert not torch.allclose(det.score(image, tall)[1], square.score(image, tall)[1])
    meta["framing"] = {"shape": "circle", "padding": 0}
    (copy / "detector.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="framing"):
        load_detector(copy)


def test_malformed_annotations_and_empty_sets_are_named(tmp_path, trained_run):
    root = make_voc_scenes(tmp_path / "voc", "train", 2, seed=5)
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    xml.write_text("<annotation><object><name>circle</name>")
    with pytest.raises(DataError, match=xml.name):
        train_detector(DetectorConfig(data=str(root), backbone=str(trained_run)), tmp_path / "out")
    for f in (root / "Annotations").glob("*.xml"):  # valid files, no objects in any
        f.write_text(
            f"<annotation><filename>{f.stem}.jpg</filename><size><width>128</width>"
            "<height>104</height></size></annotation>"
        )
    with pytest.raises(DataError, match="no objects"):
        train_detector(DetectorConfig(data=str(root), backbone=str(trained_run)), tmp_path / "out")
    assert not (tmp_path / "out" / "detector.json").exists()


def test_grayscale_and_tiny_images_detect_without_error(trained_detector, tmp_path):
    from PIL import Image

    det = load_detector(trained_detector)
    for size, mode in (((128, 104), "L"), ((12, 9), "RGB")):
        img = Image.new(mode, size, 128)
        path = tmp_path / f"{mode}.png"
        img.save(path)
        from alexsuite.data.decode import decode_image

        x = image_tensor(decode_image(path))
        for m in ("rcnn", "fast"):
            d = det.detect(x, torch.tensor([[0, 0, size[0], size[1]]], dtype=torch.float32), m, threshold=-1e9)
            assert (d.boxes[:, 2] <= size[0]).all() and (d.boxes[:, 3] <= size[1]).all()


def test_a_huge_photo_is_read_bounded_and_answered_in_its_own_pixels(trained_detector, tmp_path):
    from PIL import Image

    from alexsuite.detection.inference import MAX_SIDE

    big = Image.new("RGB", (MAX_SIDE + 600, 1500), (90, 120, 60))
    big.paste((230, 230, 40), (1800, 900, 2300, 1400))
    path = tmp_path / "big.png"
    big.save(path)
    (r,) = run_detector(load_detector(trained_detector), [path], DetectSettings(mode="fast", threshold=-1e9, workers=0))
    assert (r.width, r.height) == (MAX_SIDE + 600, 1500) and len(r.detections.boxes)
    assert r.detections.boxes[:, 2].max() > MAX_SIDE  # boxes in the original image's pixels
    assert (r.detections.boxes[:, 2] <= MAX_SIDE + 600).all() and (r.detections.boxes[:, 3] <= 1500).all()


@pytest.mark.parametrize("method", ["rcnn", "fast-rcnn"])
def test_an_edited_annotation_is_not_served_from_the_cache(tmp_path, trained_run, method):
    root = make_voc_scenes(tmp_path / "voc", "train", 3, seed=6)
    cfg = DetectorConfig(
        data=str(root),
        backbone=str(trained_run),
        method=method,
        train_fast=False,
        workers=0,
        finetune=FinetuneSettings(iterations=4, batch_size=16, checkpoint_every=2),
        fast_rcnn=FastRCNNSettings(iterations=4, checkpoint_every=2),
        proposals=ProposalSettings(size=200, max_boxes=30),
    )
    stage = "finetune" if method == "rcnn" else "fast_rcnn"
    train_detector(cfg, tmp_path / "det")
    assert train_detector(cfg, tmp_path / "det").metrics[stage]["resumed_at"] == 4  # unchanged: cached
    xml = sorted((root / "Annotations").glob("*.xml"))[0]
    text = xml.read_text()
    start = text.index("<xmin>") + len("<xmin>")
    xml.write_text(text[:start] + str(int(text[start : text.index("</xmin>")]) + 2) + text[text.index("</xmin>") :])
    again = train_detector(cfg, tmp_path / "det")
    assert again.metrics[stage]["resumed_at"] == 0  # the box moved: trained afresh
    if method == "rcnn":
        (features,) = (tmp_path / "det" / "cache" / "features").iterdir()
        assert len(list(features.iterdir())) == 3  # only the current weights' files


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"recolour": True, "fast_fraction": 0.5},
        {"recolour": True, "fast_fraction": 0.25, "image_fraction": 0.5, "rois_per_image": 4},
    ],
    ids=["paper", "recolour-fast", "recolour-fast-image"],
)
def test_fine_tuning_is_the_same_whatever_ran_before_and_when_resumed(tmp_path, trained_run, extra):
    """Dropout masks come from each iteration's own seed: the process-wide RNG (moved by
    whatever ran earlier, as in `alexsuite demo`) changes nothing, and stopping halfway and
    resuming reaches the unbroken run's weights; also with windows recoloured and half of
    each batch read the fast-mode way."""
    from alexsuite.data.decode import decode_image
    from alexsuite.detection.finetune import finetune, replace_head
    from alexsuite.detection.regions import image_tensor as to_tensor

    root = make_voc_scenes(tmp_path / "voc", "train", 3, seed=8)
    data = read_voc(root, "train")
    truths = [(a.boxes, torch.tensor([data.classes.index(lab) for lab in a.labels])) for a in data.items]
    windows = build_windows([a.boxes + 1 for a in data.items], truths)
    images = [to_tensor(decode_image(a.image)) for a in data.items]
    settings = FinetuneSettings(iterations=6, batch_size=16, lr=0.01, checkpoint_every=3, **extra)

    def run(global_seed, state=None, on_step=None):
        torch.manual_seed(global_seed)
        loaded = load_model(trained_run)
        replace_head(loaded.model, len(data.classes) + 1)
        stats = finetune(
            loaded.model,
            loaded.preprocess,
            windows,
            images.__getitem__,
            settings,
            "cpu",
            state,
            on_step=on_step,
            key="k",
        )
        return loaded.model.state_dict(), stats

    (a, _), (b, _) = run(0), run(12345)
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = []

    def interrupt(n, loss):
        steps.append(n)
        if len(steps) == 5:  # during iteration 5: the state saved at 3 remains
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(1, tmp_path / "ft.pt", interrupt)
    resumed, stats = run(2, tmp_path / "ft.pt")
    assert stats["resumed_at"] == 3
    assert all(torch.allclose(a[k].float(), resumed[k].float(), atol=1e-6) for k in a)
    if extra:  # the options change what the network is trained on
        settings = FinetuneSettings(iterations=6, batch_size=16, lr=0.01, checkpoint_every=3)
        paper, _ = run(0)
        assert not torch.equal(paper["body.0.weight"], a["body.0.weight"])
