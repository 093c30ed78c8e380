"""R-CNN's SVMs: the squared-hinge optimum, and hard-negative mining that keeps few negatives."""

import torch

from alexsuite.detection.svm import SVMSettings, fit, train_with_hard_negatives


def blobs(n_pos=40, n_neg=3000, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(dim, generator=g)
    direction /= direction.norm()
    pos = torch.randn(n_pos, dim, generator=g) + 4 * direction  # 6 sigma apart: separable but for a few
    neg = torch.randn(n_neg, dim, generator=g) - 2 * direction
    return pos, neg, direction


def test_fit_reaches_the_optimum_of_the_squared_hinge_objective():
    pos, neg, direction = blobs(n_neg=400)
    settings = SVMSettings(C=1.0)
    svm = fit(torch.cat([pos, neg]), torch.cat([torch.ones(40), -torch.ones(400)]), settings)
    x, y = torch.cat([pos, neg]), torch.cat([torch.ones(40), -torch.ones(400)])

    def gradient(weight, bias):  # of the objective, in the scaled-bias coordinates
        w = weight.clone().requires_grad_()
        b = torch.tensor(bias / settings.bias_multiplier).requires_grad_()
        margin = (1 - y * (x @ w + settings.bias_multiplier * b)).clamp_min(0)
        (0.5 * (w.dot(w) + b * b) + (torch.where(y > 0, 2.0, 1.0) * margin**2).sum()).backward()
        return torch.cat([w.grad, b.grad[None]]).norm()

    # the gradient all but vanishes at the optimum (float32 L-BFGS: 1e-4 of where it starts)
    assert gradient(svm.weight, svm.bias) < 1e-4 * gradient(torch.zeros(16), 0.0)
    assert torch.cosine_similarity(svm.weight, direction, 0) > 0.9


def test_hard_negative_mining_keeps_few_negatives_and_separates_the_rest():
    pos, neg, _ = blobs()
    settings = SVMSettings(C=1.0, retrain_every=100)
    svm, stats = train_with_hard_negatives(pos, neg.split(100), settings)
    assert stats["negatives_seen"] == 3000 and stats["negatives_kept"] < 1500 and stats["retrains"] >= 2
    full = fit(torch.cat([pos, neg]), torch.cat([torch.ones(40), -torch.ones(3000)]), settings)
    # One pass of mining over 3,000 negatives, holding a few dozen, finds the separator that
    # training on all of them finds (R-CNN: "one pass of hard-negative mining is enough").
    assert torch.cosine_similarity(svm.weight, full.weight, 0) > 0.98
    test_pos, test_neg, _ = blobs(seed=1)
    held_out = torch.cat([test_pos, test_neg])
    assert ((svm.score(held_out) > 0) == (full.score(held_out) > 0)).float().mean() > 0.99
    assert (svm.score(test_neg) < 0).float().mean() > 0.99 and (svm.score(test_pos) > 0).float().mean() > 0.5
