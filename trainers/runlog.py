"""The run log: every scalar a run logs, in RUN_DIR/metrics.jsonl, and what makes wandb's history
survive a kill.

metrics.jsonl holds one JSON object per logged step, `{"step": 6, "train/G_L1": 0.31, "val/L1": 0.4}`,
written by the main process only and flushed at every log call (a second call for the same step, the
validation metrics after the losses, rewrites that step's line, so each step has one line); the
checkpoint writer fsyncs it before a checkpoint is finalized. Non-finite values are written as null.
On resume the lines after the checkpoint's step are dropped: the resumed run logs them again.

wandb buffers its offline transaction log (`.wandb`) and flushes it every few seconds, so a run
killed with SIGKILL leaves a file with little or nothing in it. On resume, `replay_into_wandb` logs
into the resumed wandb run every step up to the checkpoint that no earlier segment's file holds, from
metrics.jsonl (scalars) and RUN_DIR/samples/ (validation grids).

Tracking is what the training loop logs through: config.yaml, metrics.jsonl, the validation grids and
Accelerate's wandb tracker, started, written and closed together, and the summary printed at the end.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from accelerate import Accelerator
from PIL import Image

from gen import config as config_lib
from gen.config import ExperimentConfig
from gen.curves import METRICS_FILE, read_metrics


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` beside it and swap it in: a kill leaves the old file or the new one,
    never a torn or empty one."""
    tmp = Path(path).with_name(Path(path).name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_value(value: Any) -> Any:
    """A logged value as JSON: numbers (0-d tensors included) as numbers, non-finite as None,
    strings and booleans as they are; anything else (images, tables) is not a scalar: raises TypeError."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    raise TypeError(f"not a scalar: {type(value).__name__}")


class RunLog:
    """RUN_DIR/metrics.jsonl, appended as the run logs. A RunLog made with `run_dir=None` (a process
    other than the main one, or before `setup`) does nothing."""

    def __init__(self, run_dir: Optional[Path] = None, resume_step: int = 0):
        self.path = None if run_dir is None else Path(run_dir) / METRICS_FILE
        self.file = None
        self.last_step: Optional[int] = None
        self.last_row: dict = {}
        self.last_offset = 0
        if self.path is not None:
            self._open(resume_step)

    def _open(self, resume_step: int) -> None:
        """Keep the rows up to the resumed step (one per step, torn lines dropped), written beside and
        swapped in so a kill during the rewrite leaves the old file whole."""
        merged: dict[int, dict] = {}
        for row in read_metrics(self.path):
            if row["step"] <= resume_step:
                merged.setdefault(row["step"], {}).update(row)
        write_atomic(self.path, "".join(json.dumps(merged[step]) + "\n" for step in sorted(merged)))
        self.file = open(self.path, "a", encoding="utf-8")
        self.last_offset = self.file.tell()

    def log(self, values: dict[str, Any], step: int) -> None:
        """Record the scalars among `values` at `step` and flush them to the OS (they survive a kill
        of this process; `sync` makes them survive a crash of the machine)."""
        if self.file is None:
            return
        scalars = {}
        for key, value in values.items():
            try:
                scalars[key] = json_value(value)
            except TypeError:
                continue
        if not scalars:
            return
        if step == self.last_step:  # the same step again (validation after the losses): one line
            self.last_row.update(scalars)
            self.file.truncate(self.last_offset)
        else:
            self.last_offset = self.file.tell()
            self.last_step, self.last_row = step, {"step": step, **scalars}
        self.file.write(json.dumps(self.last_row) + "\n")
        self.file.flush()

    def sync(self) -> None:
        """fsync: called before a checkpoint is finalized, so its steps are on disk when it is."""
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            self.sync()
            self.file.close()
            self.file = None


class Tracking:
    """A run's logs: config.yaml, scalars to RUN_DIR/metrics.jsonl (main process) and every tracker,
    validation grids to RUN_DIR/samples/ and wandb, through Accelerate's wandb tracker (none when
    `wandb_mode` is "disabled"). Nothing is written before `start`."""

    def __init__(self, acc: Accelerator, run_dir: Path, wandb_mode: str):
        self.acc, self.run_dir, self.wandb_mode = acc, Path(run_dir), wandb_mode
        self.metrics = RunLog()  # opened by start (main process only)
        self.last_grids: list[Path] = []  # the grids of the last validation, for the summary

    def start(self, cfg: ExperimentConfig, step: int, config_changed: bool) -> None:
        """Record `cfg` as config.yaml (the previous one kept as config_until_step_N.yaml when a resume
        at `step` changed it), open metrics.jsonl from `step` on, and start (or continue, by the run's
        stable id) the wandb run, logging again what an interrupted segment's wandb file lost."""
        acc, saved = self.acc, self.run_dir / "config.yaml"
        if acc.is_main_process:
            if config_changed and saved.is_file():
                shutil.copyfile(saved, self.run_dir / f"config_until_step_{step:08d}.yaml")  # kept
            write_atomic(saved, config_lib.to_yaml(cfg))  # a kill leaves the old or the new
            self.metrics = RunLog(self.run_dir, step)
        if self.wandb_mode == "disabled":
            return
        id_file = self.run_dir / "wandb_id.txt"
        if acc.is_main_process and not (id_file.is_file() and id_file.read_text().strip()):
            # A stable id lets a resumed run continue the same wandb run; written whole or not at all.
            write_atomic(id_file, secrets.token_hex(4))
        acc.wait_for_everyone()
        kwargs = {"dir": str(self.run_dir), "mode": self.wandb_mode, "id": id_file.read_text().strip(),
                  "resume": "allow", "name": cfg.log.name or self.run_dir.name}
        acc.init_trackers(cfg.log.project, config=config_lib.to_dict(cfg), init_kwargs={"wandb": kwargs})
        if acc.is_main_process and step:
            replayed = replay_into_wandb(acc.get_tracker("wandb", unwrap=True), self.run_dir, step)
            if replayed:
                acc.print(f"wandb: logged again {len(replayed)} step(s) up to step {step} from "
                          f"{METRICS_FILE} that an interrupted segment's wandb file had lost")

    def scalars(self, values: dict[str, Any], step: int) -> None:
        """To RUN_DIR/metrics.jsonl (main process) and the trackers."""
        if self.acc.is_main_process:
            self.metrics.log(values, step)
        self.acc.log(values, step=step)

    def losses(self, means: dict[str, float], step: int, lrs: dict[str, float],
               skipped: Optional[int] = None, overflows: Optional[int] = None) -> dict[str, float]:
        """Log train/<term> at `step`: the loss `means`, skip mode's count of `skipped` updates and fp16's
        `overflows` (the scaler's own back-offs, not bad updates) where they apply, and each optimizer's
        LR that step ran with (train/lr/<optimizer>). Returns what was logged, without the prefix."""
        logged = dict(means)
        if skipped is not None:
            logged["skipped_updates"] = skipped
        if overflows is not None:
            logged["fp16_overflow_steps"] = overflows
        logged.update({f"lr/{k}": lr for k, lr in lrs.items()})
        self.scalars({f"train/{k}": v for k, v in logged.items()}, step)
        return logged

    def images(self, images: dict[str, Image.Image], step: int) -> None:
        """Save each image as RUN_DIR/samples/NAME_STEP.png and log it to wandb as samples/NAME."""
        samples = self.run_dir / "samples"
        samples.mkdir(exist_ok=True)
        for name, img in images.items():
            img.save(samples / f"{name}_{step:08d}.png")
        self.last_grids = [samples / f"{name}_{step:08d}.png" for name in images]
        if self.wandb_mode != "disabled":
            import wandb
            run = self.acc.get_tracker("wandb", unwrap=True)
            run.log({f"samples/{k}": wandb.Image(v) for k, v in images.items()}, step=step)

    def sync(self) -> None:
        """metrics.jsonl on disk (before a checkpoint covering its steps is finalized)."""
        self.metrics.sync()

    def wandb_folder(self) -> Optional[Path]:
        """The wandb run's folder under RUN_DIR/wandb, or None (disabled, or no tracker started)."""
        if self.wandb_mode == "disabled":
            return None
        try:
            return Path(self.acc.get_tracker("wandb", unwrap=True).dir).parent
        except (ValueError, AttributeError, TypeError):
            return None

    def close(self) -> Optional[Path]:
        """End the trackers and metrics.jsonl; on the main process, wait until wandb's whole history is
        on disk. Returns the wandb run's folder (None without one)."""
        folder = self.wandb_folder()
        self.acc.end_training()
        self.metrics.close()
        if self.acc.is_main_process and folder is not None:
            wait_written(folder)
        return folder

    def summary(self, head: str, seconds: float, validation: Optional[tuple[int, dict[str, float]]],
                held_out: str, export_dir: Path, sample_flags: str, wandb_dir: Optional[Path]) -> str:
        """What a run leaves and how well it did, printed at its end: `head` ("pix2pix, steps 0..8")
        and the time it took, the last `validation` (step, metrics) on the `held_out` items, the last
        grids, the export and the sample.py command for it, and the wandb folder (with the sync command
        offline)."""
        minutes, secs = divmod(round(seconds), 60)
        lines = [f"summary: {head} in {minutes}m{secs:02d}s"]
        if validation is not None:
            step, metrics = validation
            shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
            lines.append(f"  validation at step {step} (held-out items: {held_out}): {shown or 'grid only'}")
        for grid in self.last_grids:
            lines.append(f"  grid:   {grid}")
        lines.append(f"  export: {export_dir}  (python sample.py {self.run_dir} {sample_flags} --output DIR)")
        if wandb_dir is not None:
            # A resumed run has one folder per segment; syncing only the last would drop the history
            # before the resume (the shell's sorted glob syncs them oldest first).
            segments = len(wandb_logs(self.run_dir))
            target = wandb_dir if segments <= 1 else f"{wandb_dir.parent}/offline-run-*"
            sync = f"  (wandb sync {target})" if self.wandb_mode == "offline" else ""
            lines.append(f"  wandb:  {wandb_dir}{sync}")
        return "\n".join(lines)


# ---- wandb's offline transaction log ---------------------------------------------------------------
BLOCK = 32768  # LevelDB log format: 32 KiB blocks of records, each with a 7-byte header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator[bytes]:
    """The serialized records of a `.wandb` file (a 7-byte ':W&B' header, then LevelDB log blocks),
    stopping quietly at a torn or truncated end (a killed run)."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:  # block trailer padding
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind not in (FULL, FIRST, MIDDLE, LAST) or pos + 7 + length > len(data):
            return
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        else:
            yield pending + chunk


def wandb_logs(run_dir: Path) -> list[Path]:
    """Every segment's transaction log under RUN_DIR/wandb (offline and online runs; not the
    latest-run link), oldest first."""
    folders = [p for p in Path(run_dir).glob("wandb/*run-*") if p.is_dir() and not p.is_symlink()]
    folders.sort(key=lambda p: p.name.split("run-", 1)[-1])  # by the start time in the name
    return [log for folder in folders for log in sorted(folder.glob("run-*.wandb"))]


def logged_keys(logs: list[Path]) -> dict[int, set[str]]:
    """{step: the top-level keys logged at that step} over the history records of these files."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    found: dict[int, set[str]] = {}
    for log in logs:
        for chunk in wandb_records(log):
            record = wandb_internal_pb2.Record()
            try:
                record.ParseFromString(chunk)
            except DecodeError:
                break
            if record.WhichOneof("record_type") != "history":
                continue
            keys = {item.key or (item.nested_key[:1] or [""])[0] for item in record.history.item}
            found.setdefault(record.history.step.num, set()).update(k for k in keys if not k.startswith("_"))
    return found


def wait_written(folder: Path, timeout: float = 10.0) -> bool:
    """Wait until the transaction log of the wandb run in `folder` holds its exit record: `finish()`
    returns a few milliseconds before wandb's writer has closed the file, and a folder copied or a
    process killed in that moment would lose the run's end. Returns whether it did in time."""
    from collections import deque

    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2

    deadline = time.monotonic() + timeout
    while True:
        for log in Path(folder).glob("run-*.wandb"):
            for chunk in deque(wandb_records(log), maxlen=8):  # the exit record is among the last
                record = wandb_internal_pb2.Record()
                try:
                    record.ParseFromString(chunk)
                except DecodeError:  # a record still being written
                    continue
                if record.WhichOneof("record_type") == "exit":
                    return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)


SAMPLE_NAME = re.compile(r"(?P<name>.+)_(?P<step>\d{8})\.png$")


def lost_rows(run_dir: Path, upto: int, present: dict[int, set[str]], since: int = 0) -> dict[int, dict]:
    """{step: {key: value or image path}}: what the run logged at steps since..upto (metrics.jsonl,
    samples/NAME_STEP.png) that the transaction logs do not hold (`present`, from `logged_keys`)."""
    lost: dict[int, dict] = {}
    for row in read_metrics(Path(run_dir) / METRICS_FILE):
        step = row["step"]
        if since <= step <= upto:
            missing = {k: v for k, v in row.items() if k != "step" and k not in present.get(step, ())}
            if missing:
                lost.setdefault(step, {}).update(missing)
    for png in sorted(Path(run_dir).glob("samples/*.png")):
        match = SAMPLE_NAME.match(png.name)
        if match:
            step, key = int(match["step"]), f"samples/{match['name']}"
            if since <= step <= upto and key not in present.get(step, ()):
                lost.setdefault(step, {})[key] = png
    return lost


def replay_into_wandb(run, run_dir: Path, upto: int) -> list[int]:
    """Log into the (resumed) wandb `run` every step <= `upto` that the earlier segments' transaction
    logs lost; returns the steps replayed. An online run that resumed at step N on the server
    already has the steps before N, so only those from N on are candidates."""
    current = Path(run.dir).parent.resolve() if getattr(run, "dir", None) else None
    logs = [log for log in wandb_logs(run_dir) if log.parent.resolve() != current]
    since = 0 if getattr(run, "offline", True) else int(getattr(run, "starting_step", 0) or 0)
    lost = lost_rows(run_dir, upto, logged_keys(logs), since)
    replayed = []
    for step in sorted(lost):
        row = {k: _image(v) if isinstance(v, Path) else (math.nan if v is None else v)
               for k, v in lost[step].items()}
        row = {k: v for k, v in row.items() if v is not None}
        if row:
            run.log(row, step=step)
            replayed.append(step)
    return replayed


def _image(path: Path):
    """A wandb.Image of a saved grid, or None for one a kill left torn."""
    import wandb
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, UnidentifiedImageError):
        return None
    return wandb.Image(str(path))
