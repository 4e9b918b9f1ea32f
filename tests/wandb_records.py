"""Read an offline wandb run back from disk (no mock, no network).

A `.wandb` file is wandb's transaction log: a 7-byte header (':W&B', magic, version) and then
LevelDB log-format blocks of 32 KiB, each record a 7-byte header (crc32c, length, type) and a
chunk of a serialized `wandb_internal_pb2.Record`.
"""
import json
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:  # block trailer padding
            pos += room
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def read_history(run_dir: Path) -> list[dict]:
    """Every history row of every offline run under run_dir/wandb, as {key: value}."""
    rows = []
    for log in sorted(Path(run_dir).glob("wandb/offline-run-*/run-*.wandb")):
        for chunk in records(log):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(chunk)
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
