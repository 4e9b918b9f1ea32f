"""Score an exported run on a split of its data (`sample.py evaluate`), with its method's scoring
(gen/methods): the metrics and grid that training's validation logs for the same weights and items,
plus what only a whole split gives (FID / KID, LPIPS, the FCN-score, CycleGAN's domain classifier,
an unconditional DDPM's FD_cifarnet / KID_cifarnet), and optionally every output as a PNG."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from . import pipelines
from .cache import Cache
from .data.evaluation import EvalData
from .methods import Context, DomainImages, Sampling, SavedOutputs, score_items, scoring_for
from .metrics.domain import ClassifierSettings, DomainClassifier, train_domain_classifier
from .metrics.inception import InceptionDistances, try_inception_distances
from .metrics.offline_score import CifarDistances, try_cifar_distances, unavailable_for
from .metrics.perceptual import try_lpips

CLASSIFIER_FILE = "domain_classifier.safetensors"

__all__ = ["evaluate", "SavedOutputs", "Sampling", "domain_classifier", "CLASSIFIER_FILE"]


def _limit(n: int, max_images: Optional[int]) -> int:
    if max_images is not None and max_images < 1:
        raise ValueError(f"--max-images {max_images}: must be at least 1")
    return n if max_images is None else min(n, max_images)


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


def check_fit(pipe, data: EvalData, segmenter=None) -> None:
    """ValueError when the split cannot score this export (named by kind and flag)."""
    kind = pipe.kind
    unpaired = ("cyclegan", "unpaired_translation")
    if kind in unpaired and data.kind != "unpaired":
        raise ValueError(f"a {pipe.method} export ({kind}) is scored on unpaired data (trainA/testA ...), "
                         f"got data.kind={data.kind!r}")
    if kind not in unpaired and data.kind == "unpaired":
        raise ValueError(f"a {kind} export is not scored on unpaired data; use the run's own config")
    if kind == "segmentation" and data.kind != "segmentation":
        raise ValueError(f"a segmentation export is scored on labelled data (data.kind=segmentation), got "
                         f"{data.kind!r}")
    if kind == "diffusion" and pipe.condition_channels and data.kind == "images":
        raise ValueError("this DDPM is image-conditioned: evaluate it on paired data (its own config)")
    if kind == "translation" and data.kind == "images":
        raise ValueError("a translation export needs paired data; data.kind=images holds photos only")
    if segmenter is not None:
        makes_photos = kind in ("translation", "diffusion")
        if not makes_photos or data.kind != "segmentation" or segmenter.kind != "segmentation":
            raise ValueError(
                "the FCN-score needs a labels -> photo run on segmentation data and a segmentation run "
                f"as --segmenter (got data.kind={data.kind!r}, segmenter kind={segmenter.kind!r})")
        if segmenter.num_classes != data.num_classes:
            raise ValueError(f"segmenter predicts {segmenter.num_classes} classes but the data has "
                             f"{data.num_classes}")
    if kind == "segmentation" and pipe.num_classes != data.num_classes:
        raise ValueError(f"the segmenter predicts {pipe.num_classes} classes but the data has "
                         f"{data.num_classes}")


def split_items(pipe, data: EvalData, max_images: Optional[int] = None):
    """The items of a split the export's scoring reads, the first max_images of each (per domain
    for unpaired data), read lazily."""
    if data.kind == "unpaired":
        files = {dom: data.files[dom][:_limit(len(data.files[dom]), max_images)] for dom in "AB"}
        channels = dict(zip("AB", data.channels))
        return DomainImages(files, data.geometry, channels, data.max_16bit, data.roots), None
    return data.items, _limit(len(data.items), max_images)


def evaluate(run_dir: Path, data: EvalData, inference: Optional[str] = None, grid_rows: int = 8,
             segmenter: Optional[Path] = None, device: Optional[str] = None, max_images: Optional[int] = None,
             saved: Optional[SavedOutputs] = None, distances: Optional[InceptionDistances] = None,
             sampling: Optional[Sampling] = None, classifier: ClassifierSettings = ClassifierSettings(),
             precision: Optional[str] = None, cifar10: Optional[Path] = None,
             cifar: Optional[CifarDistances] = None,
             export: Optional[Path] = None) -> tuple[dict[str, Any], Image.Image]:
    """(metrics, grid) of the export in `run_dir` (or of `export`, e.g. one of the run's checkpoints
    exported by trainers.snapshot: the run's caches stay in `run_dir`) on `data`, in `precision`
    (default fp32). Streamed:
    each item is read, run and scored, then dropped (Inception features and the grid's first rows
    are all that is kept), so memory does not grow with the split. An unconditional DDPM also gets
    FD_cifarnet / KID_cifarnet: in `cifar`'s classifier, else one trained on (or cached from) the
    CIFAR-10 folder `cifar10` (default gen.metrics.offline_score.DEFAULT_CIFAR10)."""
    pipe = pipelines.load_export(export or run_dir, inference, precision, device)
    seg = pipelines.load(segmenter, device=device, precision=precision) if segmenter else None
    check_fit(pipe, data, seg)
    ctx = Context(grid_rows=grid_rows, segmenter=seg, bins=data.bins, sampling=sampling or Sampling(),
                  saved=saved or SavedOutputs(None))
    if pipe.kind != "segmentation":
        ctx.lpips, ctx.lpips_missing = try_lpips()
        if pipe.kind in ("cyclegan", "unpaired_translation", "diffusion") and ctx.lpips is None:
            ctx.lpips_missing = ""  # neither reports LPIPS against a target
        ctx.distances, ctx.fid_missing = try_inception_distances(device, distances)
        out_channels = data.channels[1] if data.kind != "images" else 3
        if ctx.distances is not None and out_channels not in (1, 3):
            ctx.distances, ctx.fid_missing = None, f"FID/KID need 1- or 3-channel images (got {out_channels})"
    if cifar10 is not None and not (pipe.kind == "diffusion" and not pipe.condition_channels):
        raise ValueError(f"--cifar10 is read for unconditional DDPM runs only; {run_dir} holds a "
                         f"{pipe.kind} export" + (" (image-conditioned)" if pipe.kind == "diffusion" else ""))
    if pipe.kind == "diffusion" and not pipe.condition_channels:
        ctx.cifar_missing = unavailable_for(pipe.unet.config.out_channels, (pipe.sample_size,) * 2)
        if not ctx.cifar_missing:
            ctx.cifar, ctx.cifar_missing = ((cifar, "") if cifar is not None
                                            else try_cifar_distances(cifar10, device))
    if pipe.kind in ("cyclegan", "unpaired_translation") and data.channels == (3, 3):
        ctx.classifier = domain_classifier(run_dir, data.files["trainA"], data.files["trainB"], device,
                                           classifier)
    items, n = split_items(pipe, data, max_images)
    result, grid = score_items(scoring_for(pipe, ctx), items, n, desc=f"evaluate {data.split}")
    result.update(split=data.split)
    if data.kind != "unpaired":
        result.update(images=n)
    return result, grid
