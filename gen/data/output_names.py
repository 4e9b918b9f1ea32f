"""Output file names for a folder of inputs: one distinct file per output, never an input, never an
existing file unless asked.

`tile.jpg` and `tile.png` (or `IMG_1.JPG` and `IMG_1.jpeg`) share a stem; naming both outputs
`tile.png` would silently lose one. Inputs whose stem is unique keep `stem.png`; inputs that share a
stem get their extension in the name (`tile_jpg.png`, `tile_png.png`). Inputs in subfolders of the
input folder keep their subfolder (`a/x.jpg` -> `OUT/a/x.png`); names are made distinct per folder.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path, PurePosixPath
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


def mirrored_stems(root: Path, inputs: Sequence[Path], reserved: Sequence[str] = ()) -> list[PurePosixPath]:
    """One distinct output path without extension per input under `root`, in order, mirroring its
    subfolder: root/a/x.jpg -> 'a/x'. output_stems settles collisions within each folder; `reserved`
    names (the grid) apply to the top folder; a subfolder named like an output ('x.png/') is avoided."""
    rel = [PurePosixPath(Path(p).relative_to(root).as_posix()) for p in inputs]
    groups: dict[PurePosixPath, list[int]] = {}
    for i, r in enumerate(rel):
        groups.setdefault(r.parent, []).append(i)
    folders = {parent for r in rel for parent in r.parents}
    out: list[PurePosixPath] = [PurePosixPath()] * len(rel)
    for parent, idx in groups.items():
        # an output 'x.png' must not be the path of a mirrored subfolder 'x.png/'
        taken = [f.stem for f in folders if f.parent == parent and f.name.lower().endswith(".png")]
        own = list(reserved) if parent == PurePosixPath(".") else []
        for i, stem in zip(idx, output_stems([Path(rel[i].name) for i in idx], own + taken)):
            out[i] = parent / stem
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
