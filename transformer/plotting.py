"""Pictures: training curves from `metrics.jsonl`, and attention as a heatmap (which key pieces each query piece
read). Needs the `plot` extra (matplotlib)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from transformer.errors import MissingExtraError, ToolkitError
from transformer.files import atomic_file, check_output_path
from transformer.translator import AttentionMap

log = logging.getLogger(__name__)

# Each kind of attention map: its title, x label (keys) and y label (queries).
HEATMAPS = {
    "cross": ("cross-attention", "source pieces (keys)", "target pieces (queries)"),
    "encoder": ("encoder self-attention", "source pieces (keys)", "source pieces (queries)"),
    "decoder": ("decoder masked self-attention", "target pieces read (keys)", "target pieces produced (queries)"),
}


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError("drawing", "plot", "matplotlib") from None
    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ToolkitError(f"{path}: no such file (is {run_dir} a run directory?)")
    records, damaged = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:  # e.g. the last line of a run killed while appending it
            record = None
        if isinstance(record, dict) and all(isinstance(record.get(x), int | float) for x in ("step", "minutes")):
            records.append(record)
        else:
            damaged.append(str(number))
    if damaged:
        log.warning("%s: line %s not a training record; skipped", path, ", ".join(damaged[:5]))
    return records


# (metric, record type, label, panel, line style): the panels are loss, BLEU and learning rate.
CURVES = [("loss", "train", "train loss", 0, "-"), ("loss", "dev", "dev loss", 0, "--"),
          ("bleu", "dev", "dev BLEU", 1, "-"), ("ema_bleu", "dev", "dev BLEU, EMA weights", 1, "--"),
          ("lr", "train", "learning rate", 2, "-")]  # fmt: skip


def check_figure_path(path: str | Path, option: str) -> None:
    """Fail before the work, in one line: a figure's format comes from its name's suffix, and its folder must exist."""
    _pyplot()
    from matplotlib.backend_bases import FigureCanvasBase

    kinds, path = FigureCanvasBase.get_supported_filetypes(), Path(path)
    if path.suffix and path.suffix[1:].lower() not in kinds:
        raise ToolkitError(f"{option} {path}: cannot draw a {path.suffix} file; name it .png, .svg or .pdf")
    check_output_path(path, option)


def _save(plt: Any, fig: Any, path: str | Path, dpi: int) -> None:
    """Write the figure whole or not at all (a run's curves.png is redrawn at every validation), in the format its
    name asks for (.png, .svg, .pdf …)."""
    fig.tight_layout()
    try:
        with atomic_file(path) as file:
            fig.savefig(file, dpi=dpi, format=Path(path).suffix[1:].lower() or "png")
    finally:
        plt.close(fig)


def save_curves(runs: dict[str, list[dict[str, Any]]], path: str | Path) -> None:
    """Loss, dev BLEU and learning rate against steps (top row) and minutes (bottom row), one colour per run."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for colour, (name, records) in enumerate(runs.items()):
        for key, kind, label, panel, style in CURVES:
            rows = [r for r in records if r.get("type") == kind and key in r]
            if not rows:
                continue
            for row, x in enumerate(("step", "minutes")):
                axes[row][panel].plot([r[x] for r in rows], [r[key] for r in rows], style, color=f"C{colour}",
                                      marker="o" if kind == "dev" else None, markersize=3,
                                      label=f"{name}: {label}" if len(runs) > 1 else label)  # fmt: skip
    for row, x in enumerate(("steps", "minutes")):
        for col, title in enumerate(("loss", "dev BLEU (greedy)", "learning rate")):
            axes[row][col].set(xlabel=x, title=title)
            axes[row][col].grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    axes[0][1].legend(fontsize=7)
    _save(plt, fig, path, dpi=90)


def save_attention_heatmap(attention: AttentionMap, path: str | Path, layer: int = -1, head: int | None = None) -> None:
    """Rows are queries, columns keys; `head=None` averages the heads of the layer."""
    plt = _pyplot()
    weights = attention.weights[layer]  # (heads, queries, keys)
    weights = weights.mean(0) if head is None else weights[head]  # (queries, keys)
    keys, queries = attention.key_pieces, attention.query_pieces
    fig, ax = plt.subplots(figsize=(0.45 * len(keys) + 2.5, 0.4 * len(queries) + 2))
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right")
    ax.set_yticks(range(len(queries)), queries)
    title, xlabel, ylabel = HEATMAPS[attention.kind]
    which = "mean over heads" if head is None else f"head {head}"
    n_layers = attention.weights.size(0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title}, layer {layer % n_layers + 1} of {n_layers}, {which}")
    _save(plt, fig, path, dpi=120)
