"""Which files of a folder are data: one listing, used by every dataset and by sample.py's --input.

Rules (docs/data.md): subfolders are searched; image extensions and glob patterns match
case-insensitively (`*.jpg` finds `a.JPG`, not `b.jpeg`); symlinked files and folders are followed,
a link back to an enclosing folder (a loop) or to a folder already read is not; hidden files and
folders (a name starting with ".") are skipped. Everything left out is kept by reason, so that each
split can say at start what it found and what it skipped, naming the files.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SHOWN = 3  # names listed per reason in a report before "+N more"


def is_image_file(path: Path) -> bool:
    return Path(path).suffix.lower() in IMG_EXTENSIONS


def _segment_regex(seg: str) -> str:
    """One glob path segment -> regex: `*` and `?` never cross '/', `[...]` / `[!...]` are classes."""
    out, i = [], 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and _class_end(seg, i) > 0:
            end = _class_end(seg, i)
            body = seg[i + 1:end].replace("\\", "\\\\")
            body = "^" + body[1:] if body.startswith("!") else "\\" + body if body.startswith("^") else body
            out.append(f"[{body}]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _class_end(seg: str, i: int) -> int:
    """Index of the ']' closing the class opened at seg[i] ('[!]a]' style included), or -1."""
    j = i + 1
    j += seg[j:j + 1] == "!"
    j += seg[j:j + 1] == "]"
    return seg.find("]", j)


class GlobPattern:
    """A relative glob (`*`, `?`, `[..]`, `**` for any number of folders) matched case-insensitively
    against paths relative to the listed folder, e.g. `**/*.png` matches `c.PNG` and `x/c.png`."""

    def __init__(self, pattern: str):
        segs = [s for s in pattern.strip().split("/") if s not in ("", ".")]
        if pattern.strip().startswith("/") or ".." in segs or not segs:
            raise ValueError(f"pattern {pattern!r}: expected a glob relative to the data folder, "
                             "e.g. '**/*' (every image), '*.jpg' (top folder only) or 'cat/*.png'")
        if segs[-1] == "**":
            segs.append("*")  # 'x/**' means every file under x, as 'x/**/*'
        self.text, self.segs = pattern, segs
        body = "".join("(?:[^/]+/)*" if s == "**" else _segment_regex(s) + ("/" if k < len(segs) - 1 else "")
                       for k, s in enumerate(segs))
        self.regex = re.compile(body, re.IGNORECASE)
        self.fixed = segs.index("**") if "**" in segs else len(segs) - 1  # folder levels before any '**'
        self.levels = [re.compile(_segment_regex(s), re.IGNORECASE) for s in segs[:self.fixed]]

    def matches(self, parts: tuple[str, ...]) -> bool:
        return self.regex.fullmatch("/".join(parts)) is not None

    def may_contain(self, parts: tuple[str, ...]) -> bool:
        """Can a file under the folder `parts` match? (Folders that cannot are not searched.)"""
        if len(parts) > len(self.levels) and "**" not in self.segs:
            return False
        return all(rx.fullmatch(p) for rx, p in zip(self.levels, parts))


# Reasons a file or folder is left out, in report order.
HIDDEN, DANGLING, LOOP, REPEAT = "hidden", "dangling link", "symlink loop", "repeated folder link"
UNREADABLE, SPECIAL, NON_IMAGE, OUTPUT = "unreadable", "not a regular file", "non-image", "output folder"
ORDER = (NON_IMAGE, DANGLING, HIDDEN, LOOP, REPEAT, UNREADABLE, SPECIAL, OUTPUT)


@dataclass
class Listing:
    """Image files under `root`, sorted by relative path, and what was left out, by reason.

    skipped: reason -> full paths as text (folders end in '/'); `found` says what the files make
    ("8 pairs"), for the start-up report (default: "N images")."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)
    found: str = ""

    def skip(self, reason: str, path, folder: bool = False) -> None:
        self.skipped.setdefault(reason, []).append(str(path) + ("/" if folder else ""))

    def absorb(self, other: "Listing") -> None:
        """Take the skipped entries of another listing (e.g. of the A and B subfolders of a split)."""
        for reason, names in other.skipped.items():
            self.skipped.setdefault(reason, []).extend(names)

    def rel(self, path) -> str:
        """A path as shown in reports: relative to root when under it."""
        text, top = str(path), str(self.root).rstrip(os.sep) + os.sep
        return text[len(top):] if text.startswith(top) else text

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def skips(self) -> str:
        """'skipped 2: 1 non-image (README.txt), 1 dangling link (a.png)', or 'nothing skipped'."""
        if not self.num_skipped:
            return "nothing skipped"
        reasons = sorted(self.skipped, key=lambda r: (ORDER.index(r) if r in ORDER else len(ORDER), r))
        parts = []
        for r in reasons:
            names = [self.rel(n) for n in self.skipped[r]]
            more = f", +{len(names) - SHOWN} more" if len(names) > SHOWN else ""
            parts.append(f"{len(names)} {r} ({', '.join(names[:SHOWN])}{more})")
        return f"skipped {self.num_skipped}: " + ", ".join(parts)

    def report(self, label: str) -> str:
        """One line: '<label>: 378 pairs in /x/train; skipped 2: 1 non-image (README.txt), ...'."""
        return f"{label}: {self.found or f'{len(self.files)} images'} in {self.root}; {self.skips()}"


def scan_images(folder: Path, what: str = "images", pattern: Optional[str] = None,
                exclude: Iterable[Path] = (), require: bool = True) -> Listing:
    """Every image file under `folder` whose path relative to it matches `pattern` (see GlobPattern;
    None: every image, as '**/*'), following symlinks; the rest is recorded in `Listing.skipped`.
    Folders in `exclude` (sample.py's output folder inside its input folder) are not read. Raises
    FileNotFoundError for a missing folder and, with `require`, ValueError when no image is found
    (the message says what was skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    glob, listing = GlobPattern(pattern or "**/*"), Listing(folder)
    top = os.path.realpath(folder)
    excluded = {os.path.realpath(p) for p in exclude}
    _walk(listing, folder, (), glob, (top,), {top}, excluded)
    listing.files.sort(key=lambda p: p.relative_to(folder).parts)
    if require and not listing.files:
        where = f"in {folder}" if pattern is None else f"matching {pattern!r} in {folder}"
        raise ValueError(f"no {what} {where} (looked for "
                         f"{', '.join(IMG_EXTENSIONS)} in any letter case); {listing.skips()}")
    return listing


def _walk(listing: Listing, folder: Path, parts: tuple[str, ...], glob: GlobPattern,
          ancestors: tuple[str, ...], seen: set[str], excluded: set[str]) -> None:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:
        listing.skip(UNREADABLE, folder, folder=True)
        return
    for entry in entries:
        path, sub = folder / entry.name, parts + (entry.name,)
        is_dir = _safe(entry.is_dir)
        if entry.name.startswith("."):  # .DS_Store, ._x.jpg resource forks, .thumbs/, .git/
            listing.skip(HIDDEN, path, folder=is_dir)
        elif is_dir:
            real = os.path.realpath(path)
            reason = (OUTPUT if real in excluded else LOOP if real in ancestors else REPEAT if real in seen
                      else None if glob.may_contain(sub) else f"not searched by {glob.text!r}")
            if reason:
                listing.skip(reason, path, folder=True)
                continue
            seen.add(real)
            _walk(listing, path, sub, glob, ancestors + (real,), seen, excluded)
        elif _safe(entry.is_file):
            if not glob.matches(sub):
                listing.skip(f"not matching {glob.text!r}", path)
            elif not is_image_file(path):
                listing.skip(NON_IMAGE, path)
            else:
                listing.files.append(path)
        else:
            listing.skip(DANGLING if _safe(entry.is_symlink) else SPECIAL, path)


def _safe(test) -> bool:
    try:
        return test()
    except OSError:  # a link loop on a file (ELOOP), a permission error on stat
        return False


def count_text(count: int, noun: str, total: int, subset: slice) -> str:
    """'8 pairs', or '3 pairs (slice [1:4] of 5)' for a sliced split."""
    if subset == slice(None):
        return f"{count} {noun}"
    start, stop = ("" if v is None else v for v in (subset.start, subset.stop))
    return f"{count} {noun} (slice [{start}:{stop}] of {total})"


def data_report(splits: dict[str, Optional[object]]) -> str:
    """One line per split that is set: its listing's report ('data train: 8 pairs in ...; ...')."""
    lines = []
    for split, ds in splits.items():
        if ds is None:
            continue
        listing = getattr(ds, "listing", None)
        label = f"data {split}"
        lines.append(listing.report(label) if listing else f"{label}: {len(ds)} items in memory")
    return "\n".join(lines)


def relative_name(path: str | Path, root: Optional[Path]) -> str:
    """An item's name: its path under the split folder `root`, POSIX ('street/0001.jpg'), the same
    wherever the data lives (it names the item's outputs and its sampling noise: gen.seeding); the
    file name when it is not under `root`."""
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return path.name
