"""The deterministic stand-ins (gen.models.layers, gen.losses.dense) equal the torch ops they replace,
values and gradients; tests/test_device_audit.py checks that no step uses the originals."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gen.losses.dense import cross_entropy
from gen.models.layers import GlobalAvgPool, ReflectionPad2d, max_unpool2x2, pad_to_multiple


def same_with_grad(ours, theirs, x, exact=True):
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(a), theirs(b)
    assert ya.shape == yb.shape and (torch.equal(ya, yb) if exact else torch.allclose(ya, yb, rtol=1e-6))
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-6)


@pytest.mark.parametrize("p", [1, 3])
@pytest.mark.parametrize("deterministic", [True, False])
def test_reflection_pad_equals_torch(p, deterministic):
    torch.use_deterministic_algorithms(deterministic)
    try:
        same_with_grad(ReflectionPad2d(p), nn.ReflectionPad2d(p), torch.randn(2, 3, 7, 9))
    finally:
        torch.use_deterministic_algorithms(False)


@pytest.mark.parametrize("hw", [(32, 32), (37, 21), (16, 70)])
def test_pad_to_multiple_equals_replicate_pad(hw):
    h, w = hw
    x = torch.randn(1, 2, h, w)
    ph, pw = -h % 16, -w % 16
    same_with_grad(
        lambda t: pad_to_multiple(t, 16)[0], lambda t: F.pad(t, (0, pw, 0, ph), mode="replicate"), x
    )
    assert pad_to_multiple(x, 16)[1] == (h, w)


def test_max_unpool_equals_torch():
    pooled, switches = nn.MaxPool2d(2, return_indices=True)(torch.randn(2, 3, 8, 6))
    same_with_grad(lambda t: max_unpool2x2(t, switches), lambda t: nn.MaxUnpool2d(2)(t, switches), pooled)


def test_global_average_pool_equals_adaptive():
    same_with_grad(GlobalAvgPool(), nn.AdaptiveAvgPool2d(1), torch.randn(2, 5, 4, 6))


def test_cross_entropy_equals_torch_with_ignored_pixels():
    logits = torch.randn(2, 4, 5, 6)
    target = torch.randint(0, 4, (2, 5, 6))
    target[0, :2] = -100
    same_with_grad(
        lambda t: cross_entropy(t, target),
        lambda t: F.cross_entropy(t, target, ignore_index=-100),
        logits,
        exact=False,
    )  # summation order differs
    labels = torch.tensor([0, 3, 1])
    same_with_grad(
        lambda t: cross_entropy(t, labels),
        lambda t: F.cross_entropy(t, labels),
        torch.randn(3, 4),
        exact=False,
    )
    # By hand: two classes, logits (0, log 3) -> p = (1/4, 3/4); target 1 -> -log(3/4).
    hand = cross_entropy(torch.tensor([[0.0, float(torch.log(torch.tensor(3.0)))]]), torch.tensor([1]))
    assert torch.isclose(hand, -torch.log(torch.tensor(0.75)))
