"""Caches that know what they were built from.

A cache file (a trained domain classifier, an empirical colour prior, ...) is reused only when it
was built from the same files (resolved path, size and modification time of each, in order and by
group) and the same settings that shape it; otherwise it is rebuilt, and a line says why. A file
whose time alone changed (a data set copied or synced without its times) is compared by its SHA-256,
recorded when the cache was built, so a copy of the same data does not retrain a classifier. The key
is stored beside the cache as `<cache name>.key.json`, with the SHA-256 of the cache file it
describes, so a cache replaced or left half-written by a killed process is never trusted.

    cache = Cache(run_dir / "prior.json", "colour prior", {"images": files}, {"sigma": 5.0})
    if not cache.valid():
        cache.write(lambda tmp: tmp.write_text(...))
    ... read cache.path ...
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from .data.download import sha256_of

KEY_SUFFIX = ".key.json"


def file_entries(files: Sequence[Path]) -> list[list]:
    """[[resolved path, size in bytes, mtime in ns], ...] in the order given (symlinks followed);
    FileNotFoundError naming a file that is gone."""
    entries = []
    for f in files:
        try:
            st = os.stat(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"{f}: listed as cache input but not found") from None
        entries.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    return entries


def plain(value: Any) -> Any:
    """Settings as JSON would read them back (tuples -> lists, paths -> str), so keys compare equal."""
    return json.loads(json.dumps(value, default=str))


def _counts(files: Mapping[str, list]) -> str:
    total = sum(len(v) for v in files.values())
    if len(files) == 1:
        return f"{total} images"
    return f"{total} images (" + " + ".join(f"{len(v)} {k}" for k, v in files.items()) + ")"


def _files_difference(old: Mapping[str, list], new: Mapping[str, list]) -> str:
    """'8 other images (now 16 (8 trainA + 8 trainB): 8 new, 0 gone, 0 changed)'-style summary."""
    def index(groups):
        return {(g, e[0]): tuple(e[1:]) for g, entries in groups.items() for e in entries}

    a, b = index(old), index(new)
    paths = lambda groups: sorted(tuple(e) for entries in groups.values() for e in entries)  # noqa: E731
    if a.keys() != b.keys() and paths(old) == paths(new):  # labels matter: trainA vs trainB
        return f"the same {_counts(old)} grouped differently (now {_counts(new)})"
    added, gone = len(b.keys() - a.keys()), len(a.keys() - b.keys())
    changed = sum(1 for k in a.keys() & b.keys() if a[k] != b[k])
    if not (added or gone or changed):
        return f"the same {_counts(old)} in another order"
    same = len(a.keys() & b.keys()) - changed
    other = "other " if same == 0 else ""
    return (f"{other}{_counts(old)}, the data now has {_counts(new)}: {added} new, {gone} gone, "
            f"{changed} changed (size or time)")


def _settings_difference(old: Mapping, new: Mapping) -> str:
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
    return ", ".join(f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in keys)


class Cache:
    """One cache file and the key of what it is built from.

    files: {group name: files} (e.g. {"trainA": [...], "trainB": [...]}); settings: plain values.
    log: where the reuse / rebuild lines go (print, or accelerator.print on many processes).
    """

    def __init__(self, path: Path, what: str, files: Mapping[str, Sequence[Path]], settings: Mapping,
                 log: Callable[[str], None] = print):
        self.path, self.what, self.log = Path(path), what, log
        self.key_path = self.path.with_name(self.path.name + KEY_SUFFIX)
        self.key = {"files": {g: file_entries(fs) for g, fs in files.items()},
                    "settings": plain(dict(settings))}
        self.same_by_contents = False  # set by stale_reason
        self.validated_sha: Optional[str] = None

    def stale_reason(self) -> Optional[str]:
        """None when the cache file exists and matches the key; else why it cannot be reused."""
        if not self.path.is_file():
            return "missing"
        try:
            stored = json.loads(self.key_path.read_text())
            old_files, old_settings, digest = stored["files"], stored["settings"], stored["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return f"has no readable record of what it was built from ({self.key_path.name})"
        if digest != sha256_of(self.path):
            return "does not match its record (replaced, or left half-written)"
        self.validated_sha = digest
        self.same_by_contents = False
        if old_files != self.key["files"]:
            if not self._same_contents(old_files, stored.get("contents")):
                return f"was built from {_files_difference(old_files, self.key['files'])}"
            self.same_by_contents = True
        if old_settings != self.key["settings"]:
            return f"was built with {_settings_difference(old_settings, self.key['settings'])}"
        return None

    def _same_contents(self, old_files: Mapping[str, list], contents: Optional[Mapping[str, list]]) -> bool:
        """The same paths and sizes in the same order, and every file whose time changed has the
        SHA-256 recorded at build time (records written before digests were kept: False)."""
        new_files = self.key["files"]
        if not isinstance(contents, dict) or list(old_files) != list(new_files):
            return False
        for group, new in new_files.items():
            old, digests = old_files[group], contents.get(group)
            if not isinstance(digests, list) or not len(old) == len(new) == len(digests):
                return False
            for (path, size, mtime), (new_path, new_size, new_mtime), digest in zip(old, new, digests):
                if (path, size) != (new_path, new_size):
                    return False
                if mtime != new_mtime and sha256_of(Path(new_path)) != digest:
                    return False
        return True

    def _refresh_times(self) -> None:
        """Record the files' new times (contents unchanged), so the next check reads no file; a
        read-only cache folder keeps the old record (the next check hashes again)."""
        try:
            stored = json.loads(self.key_path.read_text())
            if stored.get("sha256") == self.validated_sha:  # not a record another process just rewrote
                write_text_atomic(self.key_path, json.dumps(dict(stored, files=self.key["files"])))
        except (OSError, ValueError):
            pass

    def valid(self, quiet: bool = False) -> bool:
        """True when the cache can be reused (says so, and from what); False otherwise (says why,
        unless it is simply not built yet). `quiet`: decide without a line (other processes)."""
        reason = self.stale_reason()
        if quiet:
            return reason is None
        if reason is None:
            settings = ", ".join(f"{k}={v}" for k, v in self.key["settings"].items())
            how = "paths, sizes, contents: only file times changed" if self.same_by_contents else (
                "paths, sizes, times")
            self.log(f"{self.what}: reusing {self.path}, built from the same {_counts(self.key['files'])} "
                     f"({how}) and settings ({settings})")
            if self.same_by_contents:
                self._refresh_times()
        elif reason != "missing":
            self.log(f"{self.what} cache in {self.path} {reason}; rebuilding")
        return reason is None

    def write(self, writer: Callable[[Path], None]) -> None:
        """writer(tmp) writes the cache to `tmp`; it is then renamed into place and its key recorded
        (both atomically: a killed write leaves the old pair, or a pair that fails the SHA check)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        try:
            writer(tmp)
            record = dict(self.key, sha256=sha256_of(tmp), what=self.what)
            contents = {g: [sha256_of(Path(e[0])) for e in group] for g, group in self.key["files"].items()}
            # Digests only of files unchanged since the key was read: a file rewritten during the build
            # leaves a record whose times mismatch and that no digest can vouch for (rebuilt next time).
            if {g: file_entries([Path(e[0]) for e in group]) for g, group in self.key["files"].items()} == \
                    self.key["files"]:
                record["contents"] = contents
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        write_text_atomic(self.key_path, json.dumps(record))


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
