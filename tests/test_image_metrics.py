"""The device-side image metrics against scikit-image, and the device confusion matrix against a
hand count."""
import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from gen.metrics import ImageScores, psnr, ssim
from gen.metrics.segmentation import ConfusionMatrix


def as_uint8_scale(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) float64 in [0, 255], what scikit-image is given."""
    return ((x.double().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("shape", [(3, 3, 40, 52), (2, 1, 7, 9), (1, 3, 64, 33)])
def test_psnr_and_ssim_equal_scikit_image(shape):
    torch.manual_seed(0)
    target = torch.rand(shape) * 2 - 1
    pred = (target + 0.2 * torch.randn(shape)).clamp(-1, 1)
    channel = {"channel_axis": 2} if shape[1] == 3 else {}
    image = (lambda x: as_uint8_scale(x)) if channel else (lambda x: as_uint8_scale(x)[..., 0])
    want_ssim = [structural_similarity(image(t), image(p), data_range=255.0, **channel)
                 for p, t in zip(pred, target)]
    want_psnr = [peak_signal_noise_ratio(as_uint8_scale(t), as_uint8_scale(p), data_range=255.0)
                 for p, t in zip(pred, target)]
    np.testing.assert_allclose(ssim(pred, target), want_ssim, rtol=0, atol=1e-9)
    np.testing.assert_allclose(psnr(pred, target), want_psnr, rtol=0, atol=1e-5)
    assert psnr(target, target)[0] == float("inf") and ssim(target, target)[0] == pytest.approx(1.0)


def test_ssim_refuses_images_smaller_than_its_window():
    with pytest.raises(ValueError, match="at least 7x7"):
        ssim(torch.zeros(1, 3, 6, 20), torch.zeros(1, 3, 6, 20))


def test_image_scores_average_per_image_values():
    torch.manual_seed(1)
    target = torch.rand(4, 3, 16, 16) * 2 - 1
    pred = (target + 0.1 * torch.randn_like(target)).clamp(-1, 1)
    scores = ImageScores()
    scores.add(pred[:1], target[:1])
    scores.add(pred[1:], target[1:])  # batches of any size: one value per image
    means = scores.means()
    assert len(scores) == 4 and set(means) == {"L1", "PSNR", "SSIM"}
    assert means["L1"] == pytest.approx(float((pred - target).abs().mean()), rel=1e-6)
    assert means["PSNR"] == pytest.approx(np.mean(psnr(pred, target)))
    assert means["SSIM"] == pytest.approx(np.mean(ssim(pred, target)))


def test_confusion_matrix_counts_on_the_device_of_its_inputs():
    pred = torch.tensor([[0, 1, 2], [2, 2, 0]])
    truth = torch.tensor([[0, 1, 1], [2, -100, 0]])  # IGNORE_INDEX (-100): skipped
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    cm.update(np.array([1]), np.array([1]))  # numpy inputs join the same matrix
    assert cm.counts.device == pred.device
    assert cm.matrix.tolist() == [[2, 0, 0], [0, 2, 1], [0, 0, 1]]
    assert cm.scores()["pixel_acc"] == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="class ids outside"):
        cm.update(torch.tensor([3]), torch.tensor([0]))
