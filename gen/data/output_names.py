"""Output file names for a folder of inputs: one distinct file per output, never an input, never an
existing file unless asked.

`tile.jpg` and `tile.png` (or `IMG_1.JPG` and `IMG_1.jpeg`) share a stem; naming both outputs
`tile.png` would silently lose one. Inputs whose stem is unique keep `stem.png`; inputs that share a
stem get their extension in the name (`tile_jpg.png`, `tile_png.png`).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Sequence


def output_stems(inputs: Sequence[Path], reserved: Sequence[str] = ()) -> list[str]:
    """One distinct stem per input, in order: the input's stem, or stem_ext when stems collide
    (compared case-insensitively, as macOS and Windows file systems do); a numeric suffix settles
    what is still taken (another input's own stem, or a `reserved` name such as the grid's)."""
    counts = Counter(p.stem.lower() for p in inputs)
    wanted = [p.stem if counts[p.stem.lower()] == 1 else f"{p.stem}_{p.suffix.lstrip('.')}" for p in inputs]
    taken = {r.lower() for r in reserved}
    out = []
    for stem in wanted:
        name, k = stem, 2
        while name.lower() in taken:
            name, k = f"{stem}_{k}", k + 1
        taken.add(name.lower())
        out.append(name)
    return out


def check_outputs(planned: Sequence[Path], inputs: Sequence[Path] = (), overwrite: bool = False,
                  flag: str = "--output") -> None:
    """Raise before anything is written if an output would replace an input (always refused) or an
    existing file (refused unless `overwrite`)."""
    twice = [p for p, n in Counter(str(p).lower() for p in planned).items() if n > 1]
    assert not twice, f"two outputs planned as {twice[:3]}"  # output_stems makes them distinct
    inputs_resolved = {Path(p).resolve() for p in inputs}
    onto_inputs = [p for p in planned if Path(p).resolve() in inputs_resolved]
    if onto_inputs:
        raise ValueError(f"{flag} would overwrite input file(s) {[str(p) for p in onto_inputs[:3]]}; "
                         "choose an output folder that is not the input folder")
    existing = [p for p in planned if Path(p).exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{len(existing)} output file(s) already exist, e.g. {[str(p) for p in existing[:3]]}; "
            f"choose another {flag} folder or pass --overwrite"
        )
