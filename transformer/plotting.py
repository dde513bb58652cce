"""Draw cross-attention as a heatmap: which source pieces each target piece read."""

from __future__ import annotations

from pathlib import Path

from transformer.translator import AttentionMap


def save_attention_heatmap(attention: AttentionMap, path: str | Path, layer: int = -1, head: int | None = None) -> None:
    """Rows are target pieces, columns source pieces; `head=None` averages the heads of the layer."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen needed
    import matplotlib.pyplot as plt

    weights = attention.weights[layer]  # (heads, tgt_len, src_len)
    weights = weights.mean(0) if head is None else weights[head]  # (tgt_len, src_len)
    src, tgt = attention.src_pieces, attention.tgt_pieces
    fig, ax = plt.subplots(figsize=(0.45 * len(src) + 2.5, 0.4 * len(tgt) + 2))
    ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, aspect="auto")
    ax.set_xticks(range(len(src)), src, rotation=60, ha="right")
    ax.set_yticks(range(len(tgt)), tgt)
    ax.set_xlabel("source pieces (keys)")
    ax.set_ylabel("target pieces (queries)")
    which = "mean over heads" if head is None else f"head {head}"
    n_layers = attention.weights.size(0)
    ax.set_title(f"cross-attention, layer {layer % n_layers + 1} of {n_layers}, {which}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
