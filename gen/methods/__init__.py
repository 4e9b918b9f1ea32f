"""One scoring per method, chosen by the export's kind: the one place each method is scored.

Adding a method is one module here (a Scoring subclass: add(items) -> outputs, result()) and one line
in SCORINGS."""
from __future__ import annotations

from .base import Context, Sampling, SavedOutputs, Scoring, score_items
from .colorization import ColorizationScoring, bins_of
from .cyclegan import CycleGANScoring, DomainImages
from .ddpm import ConditionalScoring, UnconditionalScoring
from .segmentation import SegmentationScoring
from .translation import PairedScoring
from .unpaired import UnpairedScoring


def _diffusion(pipe, ctx):
    return (ConditionalScoring if pipe.condition_channels else UnconditionalScoring)(pipe, ctx)


SCORINGS = {
    "translation": PairedScoring,
    "cyclegan": CycleGANScoring,
    "unpaired_translation": UnpairedScoring,
    "colorization": ColorizationScoring,
    "segmentation": SegmentationScoring,
    "diffusion": _diffusion,
}


def scoring_for(pipe, ctx: Context | None = None, data_kind: str | None = None) -> Scoring:
    """The scoring of `pipe`'s method (by its export kind); on paired data (`data_kind` paired or
    segmentation) a one-direction unpaired translator (CUT) is scored as any A -> B translator."""
    kind = pipe.kind
    if kind == "unpaired_translation" and data_kind in ("paired", "segmentation"):
        kind = "translation"
    if kind not in SCORINGS:
        raise ValueError(f"no scoring for {kind!r} exports; known: {sorted(SCORINGS)}")
    return SCORINGS[kind](pipe, ctx or Context())


__all__ = ["Context", "Sampling", "SavedOutputs", "Scoring", "score_items", "scoring_for", "SCORINGS",
           "bins_of", "DomainImages"]


def validation(pipe, dataset, indices: list[int], grid_rows: int | None = None,
               sampling: Sampling | None = None, bins=None) -> dict:
    """Training's validation: the export's scoring on the held-out items `indices` of `dataset`
    -> {"grid": PIL image, metric: float}, the figures `sample.py evaluate --max-images len(indices)`
    reports for the same weights."""
    # CycleGAN: the first len(indices) files of each domain (its dataset pairs A[g % |A|] with
    # B[g % |B|], which would repeat the smaller domain)
    if pipe.kind in ("cyclegan", "unpaired_translation"):
        items = DomainImages.first(dataset, len(indices))
    else:
        items = [dataset[i] for i in indices]
    ctx = Context(grid_rows=len(indices) if grid_rows is None else grid_rows, sampling=sampling or Sampling(),
                  bins=bins)
    result, grid = score_items(scoring_for(pipe, ctx), items, progress=False)
    return {"grid": grid, **{k: v for k, v in result.items() if isinstance(v, float)}}  # metrics, not counts


__all__ += ["validation"]
