"""Score an exported run on a split of its data (used by `sample.py evaluate`).

Paired runs: L1, PSNR, SSIM of output vs target. Unpaired (CycleGAN) runs: cycle-reconstruction
PSNR both ways, and a domain classifier trained on the real training images only: its accuracy
on the real test images, and the share of translated test images it assigns to the target domain.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from . import pipelines
from .cache import Cache
from .data.evaluation import EvalData
from .data.transforms import load_images
from .metrics import ImageScores, psnr
from .metrics.inception import InceptionDistances, try_inception_distances
from .metrics.perceptual import try_lpips
from .metrics.domain import ClassifierSettings, DomainClassifier, predict_domain, train_domain_classifier
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


CLASSIFIER_FILE = "domain_classifier.safetensors"


def domain_classifier(run_dir: Path, train_a: list[Path], train_b: list[Path], device: Optional[str] = None,
                      settings: ClassifierSettings = ClassifierSettings()) -> DomainClassifier:
    """Trained on the real training images, cached in the run directory and reused only while the
    training files (paths, sizes, times) and `settings` are the ones it was trained on."""
    cache = Cache(run_dir / CLASSIFIER_FILE, "domain classifier", {"trainA": train_a, "trainB": train_b},
                  {"version": 2, **dataclasses.asdict(settings)})
    if cache.valid():
        net = DomainClassifier(settings.width)
        net.load_state_dict(load_file(str(cache.path)))
        return net.eval().to(device or "cpu")
    with torch.random.fork_rng():  # training seeds the global RNG: the caller's stream is left as it was
        net = train_domain_classifier(train_a, train_b, settings, device=device or "cpu")
    cache.write(lambda tmp: save_file({k: v.cpu() for k, v in net.state_dict().items()}, str(tmp)))
    return net


class _Direction:
    """Running scores of one CycleGAN direction (src -> the other domain -> src), image by image."""

    def __init__(self, grid_rows: int):
        self.cycle_psnr: list[float] = []
        self.real_right = self.fake_judged_target = self.count = 0
        self.rows: list[list[torch.Tensor]] = []  # the first grid_rows (real, fake, reconstruction)
        self.grid_rows = grid_rows

    def add(self, real: torch.Tensor, fake: torch.Tensor, rec: torch.Tensor) -> None:
        """(1, C, H, W) each, on the CPU."""
        self.cycle_psnr += psnr(rec, real)
        self.count += 1
        if len(self.rows) < self.grid_rows:
            self.rows.append([real[0], fake[0], rec[0]])


def evaluate_unpaired(run_dir: Path, data: EvalData, inference: Optional[str] = None, grid_rows: int = 8,
                      device: Optional[str] = None, max_images: Optional[int] = None,
                      saved: Optional[SavedOutputs] = None,
                      distances: Optional[InceptionDistances] = None,
                      classifier: ClassifierSettings = ClassifierSettings()):
    """Cycle PSNR both ways, the domain classifier's judgement, and FID / KID of each direction's
    translations against the real test images of the domain they translate into. Streamed: each
    test image is read, translated, reconstructed and scored, then dropped (Inception features and
    the first `grid_rows` images are all that is kept), so memory does not grow with the split."""
    split, (channels_a, channels_b) = data.split, data.channels
    pipes = {"A": pipelines.load(run_dir, direction="AtoB", inference=inference, device=device),
             "B": pipelines.load(run_dir, direction="BtoA", inference=inference, device=device)}
    files = {dom: data.files[dom][:_limit(len(data.files[dom]), max_images)] for dom in "AB"}
    channels, saved = {"A": channels_a, "B": channels_b}, saved or SavedOutputs(None)
    distances, fid_missing = try_inception_distances(device, distances)
    # G_A(A) is judged against real B, G_B(B) against real A: one FID/KID accumulator per target domain
    judges = {t: distances.fresh() for t in "AB"} if distances else {}
    net = None
    if channels_a == 3 and channels_b == 3:
        net = domain_classifier(run_dir, data.files["trainA"], data.files["trainB"], device, classifier)
    runs = {dom: _Direction(grid_rows) for dom in "AB"}
    for src, dst in (("A", "B"), ("B", "A")):
        run, fwd, back = runs[src], pipes[src], pipes[dst]
        for path in tqdm(files[src], desc=f"translate {split}{src}", dynamic_ncols=True):
            real = load_images([path], data.geometry, channels[src], data.max_16bit)  # (1, C, H, W)
            fake = fwd(real).cpu()
            rec = back(fake).cpu()
            saved.save(to_pil(fake[0]), path.name, sub=f"{src}to{dst}")
            run.add(real, fake, rec)
            if judges:
                judges[src].add_real(real)
                judges[dst].add_fake("run", fake)
            if net is not None:
                run.real_right += int(predict_domain(net, real)[0] == "AB".index(src))
                run.fake_judged_target += int(predict_domain(net, fake)[0] == "AB".index(dst))
    a, b = runs["A"], runs["B"]
    result = {
        "cycle_PSNR_A": sum(a.cycle_psnr) / a.count,
        "cycle_PSNR_B": sum(b.cycle_psnr) / b.count,
        "split": split,
        "images_A": a.count,
        "images_B": b.count,
        "inference": pipes["A"].inference,
    }
    for target in "BA":
        if not judges:
            result[f"FID_to_{target}"] = result[f"KID_to_{target}"] = fid_missing
            continue
        result.update({f"{k}_to_{target}": v for k, v in judges[target].report("run").items()})
    if net is not None:
        result["classifier_acc_real_A"] = a.real_right / a.count
        result["classifier_acc_real_B"] = b.real_right / b.count
        result["translated_A_judged_B"] = a.fake_judged_target / a.count
        result["translated_B_judged_A"] = b.fake_judged_target / b.count
    rows = [ra + rb for ra, rb in zip(a.rows, b.rows)]
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
        # cloned: a view would keep its whole batch alive until the end
        rows += [[gray_rgb[i].clone(), out[i].clone(), images[i].clone()]
                 for i in range(min(len(images), grid_rows - len(rows)))]
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
        gen = torch.Generator(pipe.unet.device).manual_seed(seed)
        for start in tqdm(range(0, n, 16), desc=f"sample {split}", dynamic_ncols=True):
            # batch by batch: only Inception features and the grid's first rows outlive a batch
            samples = pipe(min(16, n - start), steps, scheduler, gen, progress=False).cpu()
            real = [items[i][key] for i in range(start, start + len(samples))]
            for j, img in enumerate(samples):
                saved.save(to_pil(img), f"sample_{start + j:05d}")
                if distances is not None:
                    distances.add_fake("run", img[None])
            if distances is not None:
                distances.add_real(torch.stack(real))
            rows += [[r, img.clone()] for r, img in zip(real, samples)][: grid_rows - len(rows)]
        header = ["real", f"sample ({scheduler} {steps})"]
    result = scores.means()  # empty for unconditional samples
    result.update(split=split, images=n, sampler=f"{scheduler} {steps} steps, seed {seed}")
    result.update(distances.report("run") if distances else {"FID": fid_missing, "KID": fid_missing})
    return result, image_grid(rows, header)
