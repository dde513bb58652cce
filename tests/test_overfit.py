import torch

from transformer.config import ModelConfig
from transformer.corpora import Pairs
from transformer.data import collate, encode_pairs
from transformer.decoding import greedy_decode
from transformer.model import Transformer
from transformer.tokenizer import Tokenizer

PAIRS = Pairs(
    src=["The black cat sleeps.", "The white dogs run.", "A small girl sees the red car.", "Two horses walk."],
    tgt=[
        "Le chat noir dort.",
        "Les chiens blancs courent.",
        "Une petite fille voit la voiture rouge.",
        "Deux chevaux marchent.",
    ],
)


def test_a_tiny_model_overfits_a_handful_of_pairs_to_exact_translations():
    from transformer.config import TokenizerConfig

    tokenizer = Tokenizer.train([*PAIRS.src, *PAIRS.tgt] * 20, TokenizerConfig(vocab_size=60))
    data = encode_pairs(PAIRS, tokenizer)
    batch = collate(data, list(range(len(PAIRS))))
    torch.manual_seed(0)
    model = Transformer(
        ModelConfig(d_model=64, heads=4, d_ff=128, encoder_layers=1, decoder_layers=1, dropout=0.0),
        tokenizer.vocab_size,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(150):
        loss = model(batch.src, batch.tgt_in, batch.tgt_out) / batch.tgt_tokens
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    hypotheses = tokenizer.decode(greedy_decode(model, batch.src))
    assert hypotheses == PAIRS.tgt
