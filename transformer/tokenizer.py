"""One joint SentencePiece model for source and target, trained with the special ids of `specials`.

A joint vocabulary lets the source embedding, the target embedding and the output projection share one matrix.
The trained model travels as bytes inside every checkpoint, so translating needs nothing but the checkpoint.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Sequence

import sentencepiece as spm

from transformer.config import TokenizerConfig
from transformer.errors import DataError
from transformer.specials import BOS_ID, EOS_ID, PAD_ID, UNK_ID

log = logging.getLogger(__name__)


class Tokenizer:
    """Text ↔ piece ids. `encode` adds no specials; callers add BOS/EOS where the model needs them."""

    def __init__(self, model_bytes: bytes) -> None:
        self.model_bytes = model_bytes
        self.sp = spm.SentencePieceProcessor(model_proto=model_bytes)
        if (self.sp.pad_id(), self.sp.unk_id(), self.sp.bos_id(), self.sp.eos_id()) != (PAD_ID, UNK_ID, BOS_ID, EOS_ID):
            raise DataError("tokenizer model does not use this toolkit's special ids (pad=0, unk=1, bos=2, eos=3)")

    def __reduce__(self) -> tuple[type, tuple[bytes]]:
        return Tokenizer, (self.model_bytes,)  # pickled as its model: `datasets.map` sends it to worker processes

    @classmethod
    def train(cls, sentences: Iterable[str], config: TokenizerConfig) -> Tokenizer:
        """Train on source and target sentences together: at most `config.sample_sentences`, drawn by the caller."""
        model = io.BytesIO()
        spm.set_random_generator_seed(1)  # the same corpus always gives the same model
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=config.vocab_size,
            model_type=config.model_type,
            character_coverage=config.character_coverage,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            hard_vocab_limit=False,  # a small corpus may not support the requested size: take what it supports
            input_sentence_size=config.sample_sentences,  # all it is given: its own sampling is not seeded
            shuffle_input_sentence=True,
            minloglevel=2,
        )
        tokenizer = cls(model.getvalue())
        log.info("trained a joint SentencePiece %s model with %d pieces", config.model_type, tokenizer.vocab_size)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return self.sp.encode(list(texts))

    def decode(self, ids: Sequence[Sequence[int]]) -> list[str]:
        """Piece ids → detokenized text; specials (pad, bos, eos) are dropped."""
        return [self.sp.decode([i for i in seq if i > EOS_ID or i == UNK_ID]) for seq in ids]

    def pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]
