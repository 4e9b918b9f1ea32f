"""Score an exported run on a split of its data (used by `sample.py evaluate`).

Paired runs: L1, PSNR, SSIM of output vs target. Unpaired (CycleGAN) runs: cycle-reconstruction
PSNR both ways, and a domain classifier trained on the real training images only: its accuracy
on the real test images, and the share of translated test images it assigns to the target domain.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import pipelines
from .data.evaluation import EvalData
from .data.transforms import load_images
from .metrics import ImageScores, psnr
from .metrics.inception import InceptionDistances, try_inception_distances
from .metrics.perceptual import try_lpips
from .metrics.domain import DomainClassifier, predict_domain, train_domain_classifier
from .visualize import image_grid
from .data.transforms import to_pil


class SavedOutputs:
    """Every output of an evaluated split as a PNG named by its input's stem (None folder: not saved),
    browsable and scorable by other tools. A folder that already holds files is refused unless
    `overwrite`: an earlier evaluation's outputs are not silently mixed or replaced."""

    def __init__(self, folder: Optional[Path], overwrite: bool = False):
        self.folder, self.taken, self.count = folder, set(), 0
        if folder is not None and folder.is_dir() and any(folder.iterdir()) and not overwrite:
            raise ValueError(f"{folder} already holds files; choose another --output or pass --overwrite")

    def save(self, img, name: str, suffix: str = "", sub: str = "") -> None:
        if self.folder is None:
            return
        stem, k = Path(name).stem, 2
        while f"{sub}/{stem}{suffix}".lower() in self.taken:  # two inputs sharing a stem keep two outputs
            stem, k = f"{Path(name).stem}_{k}", k + 1
        self.taken.add(f"{sub}/{stem}{suffix}".lower())
        folder = self.folder / sub if sub else self.folder
        folder.mkdir(parents=True, exist_ok=True)
        img.save(folder / f"{stem}{suffix}.png")
        self.count += 1


def _limit(n: int, max_images: Optional[int]) -> int:
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images {max_images}: must be at least 1")
    return n if max_images is None else min(n, max_images)


def evaluate_paired(run_dir: Path, data: EvalData, inference: Optional[str] = None, grid_rows: int = 8,
                    segmenter: Optional[Path] = None, device: Optional[str] = None,
                    max_images: Optional[int] = None, saved: Optional[SavedOutputs] = None,
                    distances: Optional[InceptionDistances] = None):
    """L1 / PSNR / SSIM / LPIPS, FID / KID against the split's real targets; with a segmenter run and
    labelled data (labels -> photo), also the FCN-score: the segmenter's scores on the generated photos
    against the input labels, and on the real photos (the ground-truth row, an upper bound) -- Isola
    et al. 2017 §4.2."""
    from .metrics.segmentation import ConfusionMatrix

    pipe = pipelines.load(run_dir, inference=inference, device=device)
    seg = pipelines.load(segmenter, device=device) if segmenter else None
    split, num_classes = data.split, data.num_classes
    if seg is not None and (data.kind != "segmentation" or seg.kind != "segmentation"):
        raise ValueError(
            "the FCN-score needs a labels -> photo run on segmentation data and a segmentation run "
            f"as --segmenter (got data.kind={data.kind!r}, segmenter kind={seg.kind!r})"
        )
    if seg is not None and seg.num_classes != num_classes:
        raise ValueError(
            f"segmenter predicts {seg.num_classes} classes but the data has {num_classes}"
        )
    items = data.items
    lpips_metric, lpips_missing = try_lpips()
    distances, fid_missing = try_inception_distances(device, distances)
    if distances is not None and data.channels[1] not in (1, 3):
        distances, fid_missing = None, f"FID/KID need 1- or 3-channel images (got {data.channels[1]})"
    cm_fake = ConfusionMatrix(num_classes) if seg else None
    cm_real = ConfusionMatrix(num_classes) if seg else None
    scores = ImageScores(lpips_metric)
    rows, n, saved = [], _limit(len(items), max_images), saved or SavedOutputs(None)
    for i in tqdm(range(n), desc=f"evaluate {split}", dynamic_ncols=True):
        item = items[i]
        x, y = item["input"][None], item["target"][None]
        out = pipe(x).cpu().float()
        saved.save(to_pil(out[0]), item["name"])
        if "label" in item:  # labels -> photo: the input as the network saw it, beside the output
            saved.save(to_pil(x[0]), item["name"], "_input")
        scores.add(out, y)
        if distances is not None:
            distances.add_real(y)
            distances.add_fake("run", out)
        if seg is not None:
            cm_fake.update(seg(out)[0], item["label"])
            cm_real.update(seg(y)[0], item["label"])
        if len(rows) < grid_rows:
            rows.append([x[0], out[0], y[0]])
    result = scores.means()
    result.update(split=split, images=n, inference=pipe.inference)
    if lpips_metric is None:
        result["LPIPS"] = lpips_missing
    result.update(distances.report("run") if distances else {"FID": fid_missing, "KID": fid_missing})
    if seg is not None:
        result["fcn_score_ground_truth"] = cm_real.scores()
        result["fcn_score"] = cm_fake.scores()
    return result, image_grid(rows, ["input", "output", "target"])


def domain_classifier(run_dir: Path, train_a: list[Path], train_b: list[Path],
                      device: Optional[str] = None) -> DomainClassifier:
    """Trained once on the run's real training images, cached in the run directory."""
    cache = run_dir / "domain_classifier.safetensors"
    net = DomainClassifier()
    if cache.is_file():
        net.load_state_dict(load_file(str(cache)))
        return net.eval().to(device or "cpu")
    net = train_domain_classifier(train_a, train_b, device=device or "cpu")
    save_file({k: v.cpu() for k, v in net.state_dict().items()}, str(cache))
    return net


def evaluate_unpaired(run_dir: Path, data: EvalData, inference: Optional[str] = None, grid_rows: int = 8,
                      device: Optional[str] = None, max_images: Optional[int] = None,
                      saved: Optional[SavedOutputs] = None,
                      distances: Optional[InceptionDistances] = None):
    """Cycle PSNR both ways, the domain classifier's judgement, and FID / KID of each direction's
    translations against the real test images of the domain they translate into."""
    split, (channels_a, channels_b) = data.split, data.channels
    g_ab = pipelines.load(run_dir, direction="AtoB", inference=inference, device=device)
    g_ba = pipelines.load(run_dir, direction="BtoA", inference=inference, device=device)
    files = {dom: data.files[dom][:_limit(len(data.files[dom]), max_images)] for dom in "AB"}
    real = {"A": load_images(files["A"], data.geometry, channels_a, data.max_16bit),
            "B": load_images(files["B"], data.geometry, channels_b, data.max_16bit)}
    fake, rec, rows, saved = {}, {}, [], saved or SavedOutputs(None)
    for src, fwd, back in (("A", g_ab, g_ba), ("B", g_ba, g_ab)):
        outs = [
            fwd(x[None]).cpu() for x in tqdm(real[src], desc=f"translate {split}{src}", dynamic_ncols=True)
        ]
        for path, out in zip(files[src], outs):
            saved.save(to_pil(out[0]), path.name, sub="AtoB" if src == "A" else "BtoA")
        fake[src] = torch.cat(outs)
        rec[src] = torch.cat([back(y[None]).cpu() for y in fake[src]])
    for i in range(min(grid_rows, len(real["A"]), len(real["B"]))):
        rows.append([real["A"][i], fake["A"][i], rec["A"][i], real["B"][i], fake["B"][i], rec["B"][i]])
    result = {
        "cycle_PSNR_A": sum(psnr(rec["A"], real["A"])) / len(real["A"]),
        "cycle_PSNR_B": sum(psnr(rec["B"], real["B"])) / len(real["B"]),
        "split": split,
        "images_A": len(real["A"]),
        "images_B": len(real["B"]),
        "inference": g_ab.inference,
    }
    distances, fid_missing = try_inception_distances(device, distances)
    for target, source in (("B", "A"), ("A", "B")):  # G_A(A) is judged against real B, G_B(B) against A
        if distances is None:
            result[f"FID_to_{target}"] = result[f"KID_to_{target}"] = fid_missing
            continue
        judge = InceptionDistances(distances.extractor, distances.device)
        judge.add_real(real[target])
        judge.add_fake("run", fake[source])
        result.update({f"{k}_to_{target}": v for k, v in judge.report("run").items()})
    if channels_a == 3 and channels_b == 3:
        net = domain_classifier(run_dir, data.files["trainA"], data.files["trainB"], device)
        pred_a, pred_b = predict_domain(net, real["A"]), predict_domain(net, real["B"])
        result["classifier_acc_real_A"] = float((pred_a == 0).float().mean())
        result["classifier_acc_real_B"] = float((pred_b == 1).float().mean())
        result["translated_A_judged_B"] = float((predict_domain(net, fake["A"]) == 1).float().mean())
        result["translated_B_judged_A"] = float((predict_domain(net, fake["B"]) == 0).float().mean())
    return result, image_grid(rows, ["A", "G_A(A)", "G_B(G_A(A))", "B", "G_B(B)", "G_A(G_B(B))"])


def evaluate_segmentation(run_dir: Path, data: EvalData, inference: Optional[str] = None, grid_rows: int = 8,
                          device: Optional[str] = None, max_images: Optional[int] = None,
                          saved: Optional[SavedOutputs] = None):
    """Pixel accuracy, mean accuracy, mean IU, f.w. IU from one confusion matrix over the split."""
    from .metrics.segmentation import ConfusionMatrix
    from .data.labels import label_to_tensor

    pipe, split, k, items = pipelines.load(run_dir, device=device), data.split, data.num_classes, data.items
    cm, rows, n, saved = ConfusionMatrix(k), [], _limit(len(items), max_images), saved or SavedOutputs(None)
    for i in tqdm(range(n), desc=f"evaluate {split}", dynamic_ncols=True):
        item = items[i]
        pred = pipe(item["input"][None])[0]
        cm.update(pred, item["label"])
        pred = pred.cpu()
        saved.save(pipe.label_png(pred), item["name"])
        if len(rows) < grid_rows:
            rows.append([item["input"], label_to_tensor(pred, k), label_to_tensor(item["label"], k)])
    result = dict(cm.scores(), split=split, images=n)
    return result, image_grid(rows, ["photo", "predicted", "ground truth"])


def evaluate_colorization(run_dir: Path, data: EvalData, inference: Optional[str] = None, grid_rows: int = 8,
                          device: Optional[str] = None, max_images: Optional[int] = None,
                          saved: Optional[SavedOutputs] = None,
                          distances: Optional[InceptionDistances] = None):
    """Zhang et al.'s Table 1 metrics on a split: AuC (raw, class-rebalanced), RGB PSNR, colourfulness,
    and FID / KID of the colorized images against the real photos;
    the grayscale baseline (ab = 0) scored by the same code, and the ground truth's colourfulness."""
    from .color import split_lab
    from .metrics.colorization import ColorizationScores, colourfulness
    from .pipelines.colorization import GrayBaseline

    pipe, split, images_set = pipelines.load(run_dir, device=device), data.split, data.items
    centres = torch.from_numpy(bins_of(pipe, data.bins))
    method, gray = ColorizationScores(centres), ColorizationScores(centres)
    truth_colour, rows, n, saved = [], [], _limit(len(images_set), max_images), saved or SavedOutputs(None)
    distances, fid_missing = try_inception_distances(device, distances)
    for start in tqdm(range(0, n, 32), desc=f"evaluate {split}", dynamic_ncols=True):
        items = [images_set[i] for i in range(start, min(start + 32, n))]
        images = torch.stack([it["image"] for it in items])
        l_norm, _ = split_lab(images)
        out = method.update(images, pipe(l_norm).cpu())
        for it, img in zip(items, out):
            saved.save(to_pil(img), it["name"])
        gray_rgb = gray.update(images, GrayBaseline()(l_norm))
        if distances is not None:
            distances.add_real(images)
            distances.add_fake("run", out)
            distances.add_fake("gray", gray_rgb)
        truth_colour += colourfulness(images)
        rows += [[gray_rgb[i], out[i], images[i]] for i in range(min(len(images), grid_rows - len(rows)))]
    missing = {"FID": fid_missing, "KID": fid_missing}
    gray_fid = distances.report("gray") if distances else missing
    result = dict(method.scores(), split=split, images=n, grayscale_baseline=dict(gray.scores(), **gray_fid),
                  ground_truth_colourfulness=float(sum(truth_colour) / len(truth_colour)),
                  **(distances.report("run") if distances else missing))
    return result, image_grid(rows, ["gray baseline", "colorized", "ground truth"])


def bins_of(pipe, fallback: Optional[np.ndarray]) -> np.ndarray:
    """The ab bins the metrics' rebalancing uses: the pipeline's own, else `fallback` (the data's)."""
    if pipe.bins is not None:
        return pipe.bins
    if fallback is None:
        raise ValueError("colorization scoring needs ab bins: the export has none and the data gives none")
    return fallback


def evaluate_diffusion(run_dir: Path, data: EvalData, inference: Optional[str] = None, grid_rows: int = 8,
                       device: Optional[str] = None, max_images: Optional[int] = None,
                       saved: Optional[SavedOutputs] = None, distances: Optional[InceptionDistances] = None,
                       steps: int = 50, scheduler: str = "ddim", seed: int = 0):
    """DDPM samples against the split's real images: FID / KID. Unconditional: as many samples as
    real images (seed `seed`); image-conditioned: one sample per condition (seed + index, as compare
    and the training grid), also scored by L1 / PSNR / SSIM against its target."""
    pipe = pipelines.load(run_dir, device=device)
    items, split = data.items, data.split
    n, saved = _limit(len(items), max_images), saved or SavedOutputs(None)
    distances, fid_missing = try_inception_distances(device, distances)
    rows, scores = [], ImageScores()
    if pipe.condition_channels:
        if data.kind == "images":
            raise ValueError("this DDPM is image-conditioned: evaluate it on paired data (its own config)")
        for i in tqdm(range(n), desc=f"sample {split}", dynamic_ncols=True):
            item = items[i]
            x, y = item["input"][None], item["target"][None]
            gen = torch.Generator(pipe.unet.device).manual_seed(seed + i)
            out = pipe.sample_for(x, 1, steps, scheduler, gen)
            saved.save(to_pil(out[0]), item["name"])
            scores.add(out, y)
            if distances is not None:
                distances.add_real(y)
                distances.add_fake("run", out)
            if len(rows) < grid_rows:
                rows.append([x[0], out[0], y[0]])
        header = ["condition", f"sample ({scheduler} {steps})", "target"]
    else:
        key = "image" if data.kind == "images" else "target"
        real = [items[i][key] for i in range(n)]
        gen = torch.Generator(pipe.unet.device).manual_seed(seed)
        samples = []
        for start in tqdm(range(0, n, 16), desc=f"sample {split}", dynamic_ncols=True):
            samples += list(pipe(min(16, n - start), steps, scheduler, gen, progress=False).cpu())
        for i, img in enumerate(samples):
            saved.save(to_pil(img), f"sample_{i:05d}")
        if distances is not None:
            distances.add_real(torch.stack(real))
            for img in samples:
                distances.add_fake("run", img[None])
        rows = [[real[i], samples[i]] for i in range(min(grid_rows, n))]
        header = ["real", f"sample ({scheduler} {steps})"]
    result = scores.means()  # empty for unconditional samples
    result.update(split=split, images=n, sampler=f"{scheduler} {steps} steps, seed {seed}")
    result.update(distances.report("run") if distances else {"FID": fid_missing, "KID": fid_missing})
    return result, image_grid(rows, header)
