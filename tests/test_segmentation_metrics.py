"""FCN §5 scores against a hand-computed confusion matrix, with an absent class and an ignore index."""
import numpy as np
import pytest
import torch

from gen.metrics.segmentation import ConfusionMatrix


def test_scores_match_hand_computation():
    # 4 classes; class 3 never appears in truth but is predicted once; -100 pixels are ignored.
    target = np.array([0, 0, 0, 1, 1, 2, 2, 2, -100, -100])
    pred = np.array([0, 0, 1, 1, 3, 2, 2, 0, 3, 1])
    cm = ConfusionMatrix(4)
    cm.update(pred[:5], target[:5])  # accumulated over "images", not averaged per image
    cm.update(pred[5:], target[5:])
    # n = [[2,1,0,0],[0,1,0,1],[1,0,2,0],[0,0,0,0]]; t = [3,2,3,0]; predicted = [3,2,2,1]
    assert cm.matrix.tolist() == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 2, 0], [0, 0, 0, 0]]
    s = cm.scores()
    assert s["pixel_acc"] == pytest.approx(5 / 8)
    assert s["mean_acc"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)  # class 3 has no truth: left out
    ius = [2 / (3 + 3 - 2), 1 / (2 + 2 - 1), 2 / (3 + 2 - 2), 0 / (0 + 1 - 0)]  # class 3: predicted, IU 0
    assert s["mean_iu"] == pytest.approx(sum(ius) / 4)
    assert s["fw_iu"] == pytest.approx((3 * ius[0] + 2 * ius[1] + 3 * ius[2]) / 8)


def test_class_absent_everywhere_is_left_out_of_means():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 1]), np.array([0, 1, 0]))
    s = cm.scores()
    assert s["mean_iu"] == pytest.approx((1 / 2 + 1 / 2) / 2)  # class 2: no truth, no prediction
    assert s["mean_acc"] == pytest.approx((1 / 2 + 1) / 2)


def test_perfect_and_bad_ids():
    cm = ConfusionMatrix(2)
    cm.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [1, 1]]))
    assert all(v == 1.0 for v in cm.scores().values())
    with pytest.raises(ValueError, match=r"class ids outside 0..1: \[5\]"):
        cm.update(np.array([5]), np.array([0]))
    with pytest.raises(ValueError, match="pixels"):
        cm.update(np.array([0, 1]), np.array([0]))


def test_deterministic_mode_counts_the_same_and_stays_on():
    # torchmetrics would count with an (N, K*K) table there; the update keeps torch.bincount, which
    # is deterministic without weights, and leaves the mode (and its warn_only flag) as it found it.
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randint(0, 5, (64, 64), generator=g), torch.randint(0, 5, (64, 64), generator=g)
    target[:8] = -100
    plain = ConfusionMatrix(5)
    plain.update(pred, target)
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        cm = ConfusionMatrix(5)
        cm.update(pred, target)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
    assert (cm.matrix == plain.matrix).all() and cm.matrix.sum() == 56 * 64
