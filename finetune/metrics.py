"""Run metrics to a JSONL file and TensorBoard event files (written by process 0 only)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Append `{"step", "time", "kind", ...metrics}` rows to metrics.jsonl, scalars to TensorBoard.
    """

    def __init__(self, workdir: Path, enabled: bool = True) -> None:
        self.enabled = enabled
        self.path = Path(workdir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, step: int, kind: str, metrics: dict[str, Any]) -> None:
        """Log one set of scalars (`kind` is "train", "val" or "test") at `step`."""
        if not self.enabled:
            return
        clean = {key: _scalar(value) for key, value in metrics.items()}
        row = {"step": int(step), "time": time.time(), "kind": kind, **clean}
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        assert self._tb is not None
        for key, value in clean.items():
            if isinstance(value, float) and math.isfinite(value):
                self._tb.add_scalar(f"{kind}/{key}", value, step)
        self._tb.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        if self._tb is not None:
            self._tb.close()


def _scalar(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def read_metrics(workdir: Path) -> list[dict[str, Any]]:
    """All rows of a run's metrics.jsonl, in order."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
