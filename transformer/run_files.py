"""The files a run writes beside its data: checkpoints, `metrics.jsonl` (one JSON object a line), `curves.png`, and
with the tensorboard extra TensorBoard's event files (`tensorboard --logdir runs` shows the runs side by side).
Only the main process writes; the others call the same methods and nothing happens."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformer.checkpoint import save_checkpoint
from transformer.errors import MissingExtraError, ToolkitError
from transformer.plotting import read_metrics, save_curves
from transformer.translator import AttentionMap

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

NOT_SCALARS = ("type", "step", "epoch", "minutes")  # of a metrics record: what TensorBoard does not plot


class RunFiles:
    def __init__(self, run_dir: Path, is_main: bool, first_step: int = 0) -> None:
        self.run_dir, self.is_main = run_dir, is_main
        self.draw_curves = is_main  # off after the first failure: curves must never stop training
        self.first_step = first_step  # of a resumed run: TensorBoard hides what a killed session logged after it

    def save(self, state: dict[str, Any], name: str) -> None:
        if self.is_main:
            save_checkpoint(state, self.run_dir / name)

    def keep_step(self, state: dict[str, Any], keep: int) -> None:
        """Save the weights as step_N.pt (for averaging) and delete all but the newest `keep` of them."""
        if not self.is_main:
            return
        self.save({key: state[key] for key in ("config", "tokenizer", "model", "step")}, f"step_{state['step']}.pt")
        kept = sorted(self.run_dir.glob("step_*.pt"), key=lambda path: int(path.stem.split("_")[1]))
        for old in kept[:-keep]:
            old.unlink()

    def log(self, record: dict[str, Any]) -> None:
        """Append one record to metrics.jsonl, and its numbers to TensorBoard at its step (`train/loss`, `dev/bleu`)."""
        if self.is_main:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        if self.events is not None:
            for key, value in record.items():
                if key not in NOT_SCALARS:
                    self.events.add_scalar(f"{record['type']}/{key}", value, record["step"])
            self.events.flush()  # a `tensorboard` watching the run sees each record as it comes

    @functools.cached_property
    def events(self) -> SummaryWriter | None:
        """TensorBoard's writer into the run directory, made at first use; None without the tensorboard extra (and
        nothing said: a first run installs only what training needs) and in the other processes."""
        if not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            if importlib.util.find_spec("tensorboard") is not None:  # installed, yet unusable: said once
                print(f"no TensorBoard events: {error}", file=sys.stderr)
            return None
        return SummaryWriter(self.run_dir, purge_step=self.first_step + 1 if self.first_step else None)

    def attention(self, step: int, cross: AttentionMap) -> None:
        """A dev sentence's cross-attention as TensorBoard images, one a decoder layer, averaged over its heads: row i
        is the i-th target piece, column j the j-th source piece; black 0, white the largest (as `--show-attention`)."""
        for layer, weights in enumerate(cross.weights.mean(1)):  # (queries, keys)
            scale = max(1, 256 // max(weights.shape))  # a few pixels a piece
            image = (weights / weights.max()).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
            self.events.add_image(f"attention/cross_layer_{layer + 1}", image[None], step)  # (1, height, width)
        pieces = f"source: {' '.join(cross.key_pieces)}  \ntarget: {' '.join(cross.query_pieces)}"
        self.events.add_text("attention/pieces", pieces, step)
        self.events.flush()

    def close(self) -> None:
        if self.__dict__.get("events") is not None:  # made, and made a writer (without reading `events` first)
            self.events.close()

    def redraw_curves(self) -> None:
        """Redraw curves.png. Without matplotlib (the plot extra) there are simply no curves: a first run installs
        only what training needs and must not warn. Any other failure is said once; none stops training."""
        try:
            if self.draw_curves:
                save_curves({self.run_dir.name: read_metrics(self.run_dir)}, self.run_dir / "curves.png")
        except MissingExtraError:
            self.draw_curves = False
        except (ToolkitError, OSError, ValueError) as error:
            self.draw_curves = False
            print(f"curves.png not drawn: {error}", file=sys.stderr)

    def advice(self) -> str:
        """What a stopped run tells the user: where its last good checkpoint is."""
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written"
        return f"{kept}; try a lower training.lr"
