"""Fetch the standard pix2pix and CycleGAN datasets, verified and safely extracted.

  python -m gen.data.download facades --root data/
  python -m gen.data.download horse2zebra --root data/ --sha256 <hex>
  python -m gen.data.download maps --root data/ --base-url http://my-mirror/pix2pix/

Every archive is checked against a SHA-256 (pinned in DATASETS, or given with --sha256) before
anything is extracted. Archives are read member by member first: an absolute path, a `..`
component, a link, a device or any other member that would land outside the target folder makes
the whole archive refused, and nothing is written. Extraction goes to a temporary folder beside the
target and is renamed into place, so an interrupted download never leaves a half dataset.
Without a known digest the command refuses unless --allow-unverified is given (then the digest is
printed so it can be pinned).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/"
CYCLEGAN_URL = "http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/"


@dataclass(frozen=True)
class Dataset:
    file: str  # archive name under the base URL
    base_url: str
    layout: str  # what train.py reads it as
    sha256: Optional[str] = None  # pinned digest; None: pass --sha256 (no digest is made up here)


DATASETS = {
    **{name: Dataset(f"{name}.tar.gz", PIX2PIX_URL, "paired (aligned A|B)")
       for name in ("facades", "cityscapes", "maps", "edges2shoes", "edges2handbags", "night2day")},
    **{name: Dataset(f"{name}.zip", CYCLEGAN_URL, "unpaired (trainA/trainB/testA/testB)")
       for name in ("horse2zebra", "apple2orange", "summer2winter_yosemite", "monet2photo", "cezanne2photo",
                    "ukiyoe2photo", "vangogh2photo", "iphone2dslr_flower")},
    # CycleGAN's unpaired maps/cityscapes/facades share names with pix2pix's paired sets.
    **{f"cyclegan_{name}": Dataset(f"{name}.zip", CYCLEGAN_URL, "unpaired (trainA/trainB/testA/testB)")
       for name in ("maps", "cityscapes", "facades")},
}


class UnsafeArchive(ValueError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_name(name: str, archive: Path) -> None:
    """Refuse member names that are absolute or climb out of the target folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"{archive}: refusing member {name!r}: absolute path")
    if ".." in p.parts:
        raise UnsafeArchive(
            f"{archive}: refusing member {name!r}: it would be written outside the target folder"
        )


def check_members(archive: Path) -> None:
    """Raise UnsafeArchive naming the first member that is not a plain file or folder inside the target."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for info in z.infolist():
                _check_name(info.filename, archive)
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (0o100000, 0o040000):  # only regular files and folders
                    raise UnsafeArchive(f"{archive}: refusing member {info.filename!r}: not a regular file")
        return
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            _check_name(m.name, archive)
            if not (m.isfile() or m.isdir()):
                kind = "link" if (m.issym() or m.islnk()) else "special file"
                raise UnsafeArchive(
                    f"{archive}: refusing member {m.name!r}: a {kind} (only files and folders are extracted)"
                )


def extract(archive: Path, target: Path) -> Path:
    """Check every member, then extract into `target` atomically (temp folder + rename)."""
    check_members(archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}_", dir=target.parent))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        else:
            with tarfile.open(archive) as t:
                t.extractall(tmp, filter="data")  # the stdlib's own guard, on top of check_members
        # Archives usually hold one top folder named like the dataset: unwrap it.
        entries = list(tmp.iterdir())
        source = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
        if target.exists():
            raise FileExistsError(f"{target} already exists; remove it or choose another --root")
        os.replace(source, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def fetch(url: str, dest: Path) -> None:
    """Download to `dest` through a .part file (renamed when complete)."""
    part = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(part, "wb") as f:
        shutil.copyfileobj(response, f, 1 << 20)
    os.replace(part, dest)


def download(name: str, root: Path, sha256: Optional[str] = None, base_url: Optional[str] = None,
             allow_unverified: bool = False, keep_archive: bool = False) -> Path:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    ds = DATASETS[name]
    expected = (sha256 or ds.sha256 or "").lower() or None
    if expected is None and not allow_unverified:
        raise ValueError(f"no SHA-256 is pinned for {name!r}: pass --sha256 <hex> (from a source you trust), "
                         "or --allow-unverified to download anyway and print the digest")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if target.exists():
        raise FileExistsError(f"{target} already exists; remove it or choose another --root")
    url = (base_url or ds.base_url).rstrip("/") + "/" + ds.file
    archive = root / ds.file
    fetch(url, archive)
    try:
        got = sha256_of(archive)
        if expected is not None and got != expected:
            raise ValueError(f"{archive} from {url}: SHA-256 {got} does not match the expected {expected}; "
                             "the file was not extracted")
        if expected is None:
            print(f"warning: {name} not verified; its SHA-256 is {got}", file=sys.stderr)
        extract(archive, target)
    finally:
        if not keep_archive:
            archive.unlink(missing_ok=True)
    return target


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m gen.data.download", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", help=f"one of: {', '.join(sorted(DATASETS))}")
    p.add_argument("--root", required=True, help="folder to put ROOT/NAME in")
    p.add_argument("--sha256", help="expected SHA-256 of the archive")
    p.add_argument("--base-url", help="a mirror holding the same archive names")
    p.add_argument("--allow-unverified", action="store_true", help="download without a known digest")
    p.add_argument("--keep-archive", action="store_true")
    args = p.parse_args(argv)
    try:
        target = download(args.name, Path(args.root), args.sha256, args.base_url, args.allow_unverified,
                          args.keep_archive)
    except (ValueError, OSError) as err:  # OSError covers FileExistsError and failed downloads
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.name} ({DATASETS[args.name].layout}) in {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
