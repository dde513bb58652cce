"""The special piece ids and what every layer does with id sequences: pad them into a batch, cut them at EOS.

A tiny module of its own so that masks, the loss, the model and decoding need neither the tokenizer nor the data.
"""

from __future__ import annotations

import torch

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


def pad(sequences: list[list[int]]) -> torch.Tensor:
    """(batch, max_len) tensor of ids, right-padded with PAD_ID."""
    rows = [torch.tensor(seq, dtype=torch.long) for seq in sequences]
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=PAD_ID)


def until_eos(ids: list[int]) -> list[int]:
    """The pieces before the first EOS (all of them when there is none)."""
    return ids[: ids.index(EOS_ID)] if EOS_ID in ids else ids
