"""Read an offline wandb run back from disk (no mock, no network).

A `.wandb` file is wandb's transaction log (read by `trainers.runlog.wandb_records`). wandb writes
it from its own service process and buffers it: the log of a finished run is complete only once it
holds the run's exit record, and that of a killed run may end anywhere (even right after the header).
So a reader of a finished run waits for the exit record, and every reader stops at a torn record.
"""
import json
from pathlib import Path

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

from trainers.runlog import wait_written, wandb_records

FINISH_TIMEOUT = 60.0  # seconds; wandb's writer flushes within a few, more on a loaded machine


def records(path: Path):
    """The decoded Records of one transaction log, up to a torn or truncated end."""
    for chunk in wandb_records(path):
        rec = wandb_internal_pb2.Record()
        try:
            rec.ParseFromString(chunk)
        except DecodeError:  # a record cut by a kill
            return
        yield rec


def wait_finished(segment: Path) -> None:
    """Wait until the run in `segment` (a wandb/offline-run-* folder) has its exit record on disk."""
    assert wait_written(segment, FINISH_TIMEOUT), f"{segment}: no exit record after {FINISH_TIMEOUT:.0f} s"


def history(log: Path) -> list[dict]:
    """The history rows of one transaction log, as {key: value} (media as nested dicts)."""
    rows = []
    for rec in records(log):
        if rec.WhichOneof("record_type") != "history":
            continue
        row: dict = {}
        for item in rec.history.item:
            *parents, leaf = list(item.nested_key) or [item.key]  # media are logged as nested keys
            node = row
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = json.loads(item.value_json)
        rows.append(row)
    return rows


def read_history(run_dir: Path) -> list[dict]:
    """Every history row of every offline run under run_dir/wandb, oldest segment first, once the
    newest (the one that finished; older ones of a resumed run may have been killed) is complete."""
    segments = sorted(Path(run_dir).glob("wandb/offline-run-*"))
    assert segments, f"no offline wandb run under {run_dir}/wandb"
    wait_finished(segments[-1])
    logs = [log for segment in segments for log in sorted(segment.glob("run-*.wandb"))]
    return [row for log in logs for row in history(log)]
