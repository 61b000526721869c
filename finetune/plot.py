"""The learning curve of a run as a PNG: training loss, and validation scores against steps.

The scores are the bounded summary metrics of the metric registry (`evaluation.summary_keys`),
labelled as the registry labels them; the demo's targets are dashed.

    python -m finetune.plot RUN_WORKDIR docs/learning_curve.png [--title TEXT]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.metrics import read_metrics

#: Dashed target lines: the demo's acceptance targets on synthetic data, by metric key.
TARGETS = {"chexpert_micro_f1_5": 0.8, "radgraph_partial": 0.5}
COLORS = ("tab:red", "tab:green", "tab:gray", "tab:purple", "tab:orange", "tab:brown")


def plotted_metrics() -> list[tuple[str, str, float | None]]:
    """(key, label, target) per curve of the right panel: the bounded summary metrics."""
    import evaluation

    for key in TARGETS:
        evaluation.metric(key)  # an unknown key is an error, not a missing line
    specs = [evaluation.metric(key) for key in evaluation.summary_keys()]
    return [(m.key, m.label, TARGETS.get(m.key)) for m in specs if m.bounded]


def plot_learning_curve(workdir: Path, out: Path, title: str = "") -> Path:
    """Write the curve of `workdir/metrics.jsonl` to `out` (two panels, targets dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    train = [r for r in rows if r["kind"] == "train"]
    val = [r for r in rows if r["kind"] == "val"]
    test = [r for r in rows if r["kind"] == "test"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
    left.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1.2)
    left.set_xlabel("step")
    left.set_ylabel("training loss (suffix tokens)")
    left.set_yscale("log")
    left.grid(alpha=0.3)
    for index, (key, label, target) in enumerate(plotted_metrics()):
        color = COLORS[index % len(COLORS)]
        points = [(r["step"], r[key]) for r in val if key in r]
        if points:
            right.plot(*zip(*points, strict=True), marker="o", color=color, label=f"val {label}")
        if target is not None:
            right.axhline(target, color=color, ls="--", lw=0.8)
        for i, r in enumerate(test):  # plotted at the step of the checkpoint that was scored
            if key in r:
                right.scatter([r.get("checkpoint_step", r["step"])], [r[key]], marker="*", s=140,
                              color=color, edgecolors="black", linewidths=0.5, zorder=3,
                              label=f"held-out test {label}" if i == len(test) - 1 else None)
    right.set_xlabel("step")
    right.set_ylabel("score")
    right.set_ylim(0, 1)
    right.grid(alpha=0.3)
    right.legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--title", default="")
    args = parser.parse_args()
    print(plot_learning_curve(args.workdir, args.out, args.title))


if __name__ == "__main__":
    main()
