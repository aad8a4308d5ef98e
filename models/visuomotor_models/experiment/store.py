"""Results on disk as they finish: one JSON object per line, appended and synced per row.

``results.jsonl`` in the run directory is the single record of finished episodes. On open,
a torn last line (a run killed mid-write) is cut off; rows with ``error`` set do not count
as finished, so a resumed run retries them. The latest row of a task wins.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class ResultStore:
    """Append-only JSONL of episode rows, keyed by task id."""

    FILE = "results.jsonl"

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / self.FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, dict] = {}
        self.torn_lines = 0
        if self.path.is_file():
            self._load()
        self._handle = open(self.path, "a", encoding="utf-8")

    def _load(self) -> None:
        data = self.path.read_bytes()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break
            try:
                row = json.loads(line)
            except ValueError:
                break
            self.rows[row["id"]] = row
            good += len(line)
        if good < len(data):  # a torn or corrupt tail: keep what precedes it
            self.torn_lines = data[good:].count(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(good)

    def done(self, task_id: str) -> bool:
        row = self.rows.get(task_id)
        return row is not None and row.get("error") is None

    def append(self, row: dict) -> None:
        self._handle.write(json.dumps(row, separators=(",", ":")) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.rows[row["id"]] = row

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
