import torch

from alexsuite import boxes


def test_encode_decode_round_trip_and_the_papers_parametrisation():
    p = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 8.0, 8.0]])
    g = torch.tensor([[14.0, 10.0, 64.0, 90.0], [1.0, 2.0, 5.0, 6.0]])
    t = boxes.encode(p, g)
    # box 0: P centre (30, 60), size 40x80; G centre (39, 50), size 50x80
    assert torch.allclose(t[0], torch.tensor([9 / 40, -10 / 80, torch.log(torch.tensor(50 / 40)), 0.0]))
    assert torch.allclose(boxes.decode(p, t), g, atol=1e-5)


def test_context_window_leaves_16_pixels_at_227():
    region = boxes.context_window(torch.tensor([[100.0, 100.0, 295.0, 295.0]]), crop=227, padding=16)
    # warped to 227, the box itself spans 227 - 2 * 16 = 195 pixels: here 1 image px = 1 warped px
    assert torch.allclose(region, torch.tensor([[84.0, 84.0, 311.0, 311.0]]))


def test_square_framing_keeps_proportions_and_warp_stretches():
    from alexsuite.detection.framing import Framing

    tall = torch.tensor([[40.0, 20.0, 60.0, 100.0]])  # 20 x 80, centre (50, 60)
    assert boxes.tightest_square(tall).tolist() == [[10.0, 20.0, 90.0, 100.0]]
    assert torch.equal(Framing("warp", 16).windows(tall, 227), boxes.context_window(tall, 227, 16))
    # appendix A's B with p = 16: the 80 px square grown so it spans 195 of 227 warped pixels
    side = 80 * 227 / 195
    assert torch.allclose(
        Framing("square", 16).windows(tall, 227),
        torch.tensor([[50 - side / 2, 60 - side / 2, 50 + side / 2, 60 + side / 2]]),
    )
    assert Framing("square", 0).windows(tall, 28).tolist() == [[10.0, 20.0, 90.0, 100.0]]


def test_nms_is_per_class_and_clip_and_valid():
    b = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], dtype=torch.float)
    keep = boxes.nms_per_class(b, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([0, 0, 1, 0]), 0.3)
    assert sorted(keep.tolist()) == [0, 2, 3]  # box 1 overlaps box 0 (same class); box 2 is another class
    clipped = boxes.clip(torch.tensor([[-5.0, 3.0, 50.0, 70.0]]), width=40, height=60)
    assert clipped.tolist() == [[0.0, 3.0, 40.0, 60.0]]
    assert boxes.valid(torch.tensor([[0.0, 0, 0.5, 10], [0, 0, 2, 2]])).tolist() == [False, True]
