"""Export to CTranslate2, the inference engine the field deploys Transformer translation models with, and translate
through it. Needs the `deploy` extra (`pip install "mini-transformer[deploy]"`): nothing else imports this module.

Our weights map onto CTranslate2's Transformer spec one to one: the same layers, pre- or post-norm (`pre_norm`, and
the final norms only with pre-norm), embeddings scaled by √d_model (`scale_embeddings`), our own sinusoid table
(ours interleaves sin and cos; CTranslate2's built-in one does not, so the table is exported), queries, keys and
values fused as CTranslate2 expects, and one embedding matrix for source, target and the output projection (no bias).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from transformer.checkpoint import read_checkpoint
from transformer.errors import MissingExtraError, ToolkitError
from transformer.tokenizer import Tokenizer
from transformer.translator import encode_sources

QUANTIZATIONS = ("float32", "int8", "int16", "int8_float32")
# What an export writes: CTranslate2's files (its vocabulary as .json or, in older releases, .txt) and ours.
EXPORT_FILES = {"model.bin", "config.json", "shared_vocabulary.json", "shared_vocabulary.txt", "tokenizer.model",
                "decoding.json"}  # fmt: skip


def _ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise MissingExtraError("the CTranslate2 engine", "deploy", "ctranslate2") from None
    return ctranslate2


def export_ctranslate2(checkpoint_path: str | os.PathLike, out: str | os.PathLike, quantization: str) -> Path:
    """Write a CTranslate2 model directory with `tokenizer.model` and `decoding.json` beside the weights."""
    if quantization not in QUANTIZATIONS:
        raise ToolkitError(f"--quantization: choose one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
    ctranslate2 = _ctranslate2()
    from ctranslate2.specs import transformer_spec

    out = Path(out)
    _check_export_target(out)  # before anything is read or written
    checkpoint = read_checkpoint(checkpoint_path)
    model, config = checkpoint.build_model().float().eval(), checkpoint.config.model
    weights = {name: p.detach().numpy() for name, p in model.state_dict().items()}
    pre_norm = config.norm == "pre"
    spec = transformer_spec.TransformerSpec.from_config(
        (config.encoder_layers, config.decoder_layers), config.heads, pre_norm=pre_norm
    )

    def linear(target, *prefixes: str) -> None:  # several: fused into one matrix, as CTranslate2 expects
        target.weight = np.concatenate([weights[f"{prefix}.weight"] for prefix in prefixes])
        target.bias = np.concatenate([weights[f"{prefix}.bias"] for prefix in prefixes])

    def norm(target, prefix: str) -> None:
        target.gamma, target.beta = weights[f"{prefix}.weight"], weights[f"{prefix}.bias"]

    table = model.positions.table.numpy()
    for side, layers in ((spec.encoder, "encoder_layers"), (spec.decoder, "decoder_layers")):
        embeddings = side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings
        embeddings.weight = weights["embedding.weight"]
        side.scale_embeddings = True
        side.position_encodings.encodings = table
        if pre_norm:
            norm(side.layer_norm, layers.split("_")[0] + "_norm")
        for i, layer in enumerate(side.layer):
            prefix = f"{layers}.{i}"
            attention = f"{prefix}.self_attention"
            linear(layer.self_attention.linear[0], f"{attention}.query", f"{attention}.key_value")
            linear(layer.self_attention.linear[1], f"{attention}.out")
            norm(layer.self_attention.layer_norm, f"{prefix}.self_attention_norm")
            if layers == "decoder_layers":
                for target, part in zip(layer.attention.linear, ("query", "key_value", "out"), strict=True):
                    linear(target, f"{prefix}.cross_attention.{part}")
                norm(layer.attention.layer_norm, f"{prefix}.cross_attention_norm")
            linear(layer.ffn.linear_0, f"{prefix}.feed_forward.net.0")
            linear(layer.ffn.linear_1, f"{prefix}.feed_forward.net.3")
            norm(layer.ffn.layer_norm, f"{prefix}.feed_forward_norm")
    spec.decoder.projection.weight = weights["embedding.weight"]
    spec.decoder.projection.bias = weights["embedding.weight"][:, 0] * 0
    vocabulary = [checkpoint.tokenizer.sp.id_to_piece(i) for i in range(checkpoint.tokenizer.vocab_size)]
    spec.register_source_vocabulary(vocabulary)
    spec.register_target_vocabulary(vocabulary)

    class _Converter(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    # The converter's `force` empties the folder it writes: it only ever gets a new one of ours, moved in after.
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        _Converter().convert(str(staging), quantization=None if quantization == "float32" else quantization, force=True)
        (staging / "tokenizer.model").write_bytes(checkpoint.tokenizer.model_bytes)
        decoding = checkpoint.config.decoding
        limits = {"max_len_a": decoding.max_len_a, "max_len_b": decoding.max_len_b}
        limits["max_positions"] = config.max_positions
        (staging / "decoding.json").write_text(json.dumps(limits, indent=2) + "\n", encoding="utf-8")
        out.mkdir(exist_ok=True)
        written = {path.name for path in staging.iterdir()}
        for name in written:
            os.replace(staging / name, out / name)
        for stale in EXPORT_FILES - written:  # a previous export's file this one does not write
            (out / stale).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _check_export_target(out: Path) -> None:
    """Export writes into a new or empty directory, or over a previous export: never over a file it did not write."""
    if out.exists() and not out.is_dir():
        raise ToolkitError(f"--out {out}: is a file; export writes a directory (choose a new or empty one)")
    names = {path.name for path in out.iterdir()} if out.is_dir() else set()
    previous_export = {"model.bin", "decoding.json"} <= names <= EXPORT_FILES
    if names and not previous_export:
        example = sorted(names - EXPORT_FILES) or sorted(names)
        raise ToolkitError(
            f"--out {out}: holds files export did not write ({example[0]}…); choose a new or empty directory, "
            "nothing was written"
        )


class CTranslate2Translator:
    """Translate through an exported model with the same tokenization, length limits and detokenization as ours."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        beam_size: int = 1,
        batch_size: int = 64,
        threads: int = 0,
        length_penalty: float = 0.0,
        device: str = "cpu",
    ) -> None:
        """`length_penalty` is CTranslate2's own: log-probability / length^alpha (ours: / ((5 + length) / 6)^alpha)."""
        ctranslate2, model_dir = _ctranslate2(), Path(model_dir)
        if not (model_dir / "model.bin").is_file():
            raise ToolkitError(f"{model_dir}: not an exported CTranslate2 model (no model.bin; see scripts/export.py)")
        try:  # a file of the export missing or damaged: one line naming the folder
            self.tokenizer = Tokenizer((model_dir / "tokenizer.model").read_bytes())
            self.limits = json.loads((model_dir / "decoding.json").read_text(encoding="utf-8"))
            self.limits = {key: self.limits[key] for key in ("max_len_a", "max_len_b", "max_positions")}
            self.engine = ctranslate2.Translator(str(model_dir), device=device, intra_threads=threads)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:  # JSONDecodeError is a ValueError
            why = " ".join(str(e).split())[:200]  # one line
            raise ToolkitError(f"{model_dir}: a damaged export ({type(e).__name__}: {why}); export it again") from None
        self.beam_size, self.batch_size, self.length_penalty = beam_size, batch_size, length_penalty

    def translate(self, sentences: list[str]) -> list[str]:
        """One output line per input line, in order; the same a*src+b limit per sentence as ours."""
        ids = encode_sources(self.tokenizer, sentences, self.limits["max_positions"] - 1)
        outputs: list[list[int]] = [[] for _ in sentences]
        rows = [i for i in range(len(ids)) if len(ids[i]) > 1]
        a, b = self.limits["max_len_a"], self.limits["max_len_b"]
        limits = {i: min(int(len(ids[i]) * a + b), self.limits["max_positions"] - 1) for i in rows}
        # CTranslate2 takes one max_decoding_length a call. Greedy choices do not depend on it: one call with the
        # largest limit, each output cut at its own. A beam that reaches a sentence's own limit must end there (a
        # longer search would rank other beams), so beam search makes one call per distinct limit.
        by_limit = [[i for i in rows if limits[i] == limit] for limit in sorted(set(limits.values()))]
        for group in [rows] if self.beam_size == 1 else by_limit:
            results = self.engine.translate_batch(
                [self.tokenizer.pieces(ids[i]) for i in group],
                beam_size=self.beam_size,
                length_penalty=self.length_penalty,
                max_batch_size=self.batch_size,
                max_decoding_length=max((limits[i] for i in group), default=1),
            )
            for row, result in zip(group, results, strict=True):
                outputs[row] = self.tokenizer.sp.piece_to_id(result.hypotheses[0])[: limits[row]]
        return self.tokenizer.decode(outputs)
