"""Draw attention as a heatmap: which key pieces each query piece read. Needs the `plot` extra (matplotlib)."""

from __future__ import annotations

from pathlib import Path

from transformer.errors import ToolkitError
from transformer.translator import AttentionMap

TITLES = {"cross": "cross-attention", "encoder": "encoder self-attention", "decoder": "decoder masked self-attention"}
AXES = {
    "cross": ("source pieces (keys)", "target pieces (queries)"),
    "encoder": ("source pieces (keys)", "source pieces (queries)"),
    "decoder": ("target pieces read (keys)", "target pieces produced (queries)"),
}


def save_attention_heatmap(attention: AttentionMap, path: str | Path, layer: int = -1, head: int | None = None) -> None:
    """Rows are queries, columns keys; `head=None` averages the heads of the layer."""
    try:
        import matplotlib
    except ImportError:
        raise ToolkitError('drawing attention needs matplotlib: pip install -e ".[plot]"') from None
    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt

    weights = attention.weights[layer]  # (heads, queries, keys)
    weights = weights.mean(0) if head is None else weights[head]  # (queries, keys)
    keys, queries = attention.key_pieces, attention.query_pieces
    fig, ax = plt.subplots(figsize=(0.45 * len(keys) + 2.5, 0.4 * len(queries) + 2))
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(keys)), keys, rotation=60, ha="right")
    ax.set_yticks(range(len(queries)), queries)
    ax.set_xlabel(AXES[attention.kind][0])
    ax.set_ylabel(AXES[attention.kind][1])
    which = "mean over heads" if head is None else f"head {head}"
    n_layers = attention.weights.size(0)
    ax.set_title(f"{TITLES[attention.kind]}, layer {layer % n_layers + 1} of {n_layers}, {which}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
