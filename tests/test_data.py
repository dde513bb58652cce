import gzip

import datasets
import pytest
import torch

from transformer.config import DataConfig
from transformer.corpora import read_split
from transformer.data import Encoded, batch_plan, padding_fraction
from transformer.demo_corpus import demo_corpus
from transformer.errors import DataError
from transformer.text import clean_text, iter_lines


def test_demo_splits_never_share_a_sentence():
    splits = demo_corpus(2000, 200, 200, seed=7)
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [2000, 200, 200]
    english = {name: {en for en, _ in pairs} for name, pairs in splits.items()}
    assert not english["train"] & english["dev"] and not english["train"] & english["test"]
    assert not english["dev"] & english["test"]
    assert demo_corpus(2000, 200, 200, seed=7) == splits  # seeded


def test_demo_grammar_agrees_in_gender_and_number_and_contracts():
    pairs = dict(pair for split in demo_corpus(6000, 10, 10, seed=1).values() for pair in split)
    french = " ".join(pairs.values())
    for phrase in ("chat noir", "voiture noire", "chats noirs", "petite", " du ", " au ", " aux "):
        assert phrase in french
    for en, fr in pairs.items():
        if en.startswith("The black cats "):
            assert fr.startswith("Les chats noirs ")
        if en.startswith("The small house "):
            assert fr.startswith("La petite maison ")
        assert " de le " not in fr and " à le " not in fr and " de les " not in fr


def write_pair(tmp_path, name, src: bytes, tgt: bytes, gz=False):
    for lang, payload in (("en", src), ("fr", tgt)):
        path = tmp_path / (f"{name}.{lang}.gz" if gz else f"{name}.{lang}")
        path.write_bytes(gzip.compress(payload) if gz else payload)


def test_line_files_with_bom_crlf_bad_bytes_and_empty_lines(tmp_path, caplog):
    write_pair(
        tmp_path,
        "train",
        b"\xef\xbb\xbfHello.\r\n\r\n  \r\nBad \xff byte\x07.\r\nTwo\x1cparts\n",
        b"Bonjour.\r\nVide.\r\nRien.\r\nMauvais.\r\nDeux parties\n",
        gz=True,
    )
    config = DataConfig(corpus="files", path=str(tmp_path))
    with caplog.at_level("INFO"):
        pairs = read_split(config, "train")
    assert pairs.src == ["Hello.", "Bad \ufffd byte .", "Two parts"]  # empty pairs dropped, \x1c keeps one line
    assert "dropped 2 of 5 pairs with an empty side" in caplog.text
    assert "1 pairs had bytes that are not UTF-8" in caplog.text
    assert pairs.tgt == ["Bonjour.", "Mauvais.", "Deux parties"]


def test_different_line_counts_are_an_error_naming_both(tmp_path):
    write_pair(tmp_path, "train", b"a\nb\nc\n", b"x\ny\n")
    with pytest.raises(DataError, match=r"3 source lines in .*train\.en but 2 target lines in .*train\.fr"):
        read_split(DataConfig(corpus="files", path=str(tmp_path)), "train")


def test_missing_split_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"data file not found: .*val\.en"):
        read_split(DataConfig(corpus="files", path=str(tmp_path)), "dev")


def test_tsv_and_jsonl_corpora_with_named_columns(tmp_path):
    (tmp_path / "train.tsv").write_text("english\tfrench\nThe cat.\tLe chat.\nA dog.\tUn chien.\n")
    (tmp_path / "train.jsonl").write_text('{"translation": {"en": "The cat.", "fr": "Le chat."}}\n')
    tsv = read_split(DataConfig(corpus="tsv", path=str(tmp_path), src_field="english", tgt_field="french"), "train")
    assert tsv.src == ["The cat.", "A dog."] and tsv.tgt == ["Le chat.", "Un chien."]
    jsonl = DataConfig(corpus="jsonl", path=str(tmp_path), src_field="translation.en", tgt_field="translation.fr")
    assert read_split(jsonl, "train").tgt == ["Le chat."]
    with pytest.raises(DataError, match="no field 'nope'"):
        read_split(DataConfig(corpus="tsv", path=str(tmp_path), src_field="nope", tgt_field="french"), "train")


def test_lines_keep_unicode_line_separators_inside_them(tmp_path):
    path = tmp_path / "x.en"
    path.write_bytes("one\u2028still one\nlast".encode())
    assert list(iter_lines(path)) == ["one\u2028still one", "last"]
    assert clean_text("one\u2028still one") == "one still one"


def reference_plan(src_lens, tgt_lens, batch_tokens, seed, epoch):
    """The batch plan of the list-based code it replaced, step by step, as the reference it must equal."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    order = torch.randperm(len(src_lens), generator=generator).tolist()
    order.sort(key=lambda i: (src_lens[i], tgt_lens[i]))
    batches, current, longest = [], [], 0
    for i in order:
        length = src_lens[i] + tgt_lens[i]
        if current and max(longest, length) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    batches.append(current)
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def lengths_only(lengths):
    return Encoded.of(
        datasets.Dataset.from_dict({"src": [[5] * s for s, _ in lengths], "tgt": [[6] * t for _, t in lengths]})
    )


def test_batches_cover_every_pair_once_within_the_token_budget():
    lengths = [(3 + i % 17, 2 + (i * 7) % 19) for i in range(500)]
    data = lengths_only(lengths)
    plan = batch_plan(data, batch_tokens=200, seed=1, epoch=0)
    assert sorted(int(i) for b in plan for i in b) == list(range(500))
    for b in plan:
        assert len(b) * max(sum(lengths[i]) for i in b) <= 200
    assert [b.tolist() for b in plan] == [b.tolist() for b in batch_plan(data, 200, seed=1, epoch=0)]  # resumable
    assert [b.tolist() for b in plan] != [b.tolist() for b in batch_plan(data, 200, seed=1, epoch=1)]
    assert padding_fraction(data, plan) < 0.25  # bucketing keeps padding small


def test_the_plan_from_length_arrays_equals_the_list_based_plan():
    generator = torch.Generator().manual_seed(3)
    src, tgt = (torch.randint(2, 40, (3000,), generator=generator).tolist() for _ in range(2))
    data = lengths_only(list(zip(src, tgt, strict=True)))
    for seed, epoch, budget in ((1, 0, 300), (2, 5, 1000), (7, 1, 80)):
        plan = [b.tolist() for b in batch_plan(data, budget, seed, epoch)]
        assert plan == reference_plan(src, tgt, budget, seed, epoch)


def test_multi30k_downloads_once_into_the_cache(tmp_path, monkeypatch):
    served = []

    class Response:
        def __init__(self, url):
            served.append(url)
            self.payload = gzip.compress(b"one\ntwo\n")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self):
            return self.payload

    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: Response(url))
    config = DataConfig(corpus="multi30k", cache_dir=str(tmp_path), dev_split="val")
    assert read_split(config, "dev").src == ["one", "two"]
    assert read_split(config, "dev").tgt == ["one", "two"]
    assert served == [
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/val.en.gz",
        "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/val.fr.gz",
    ]
    assert sorted(p.name for p in (tmp_path / "multi30k").iterdir()) == ["val.en.gz", "val.fr.gz"]


def test_hub_corpus_is_loaded_through_datasets(tmp_path):
    # load_dataset also takes a local folder, which stands in for a Hub repository without the network
    (tmp_path / "train.jsonl").write_text('{"translation": {"en": "Hi.", "fr": "Salut."}}\n')
    config = DataConfig(corpus="hub", hub_name=str(tmp_path), src_field="translation.en", tgt_field="translation.fr")
    assert read_split(config, "train").tgt == ["Salut."]


def test_overlong_pairs_are_dropped_and_counted(caplog):
    from transformer.config import TokenizerConfig
    from transformer.corpora import Pairs
    from transformer.data import encode_pairs
    from transformer.tokenizer import Tokenizer

    short, long_src, long_tgt = ("A cat.", "Un chat."), ("A cat " * 30, "Un chat."), ("A cat.", "Un chat " * 30)
    tokenizer = Tokenizer.train([s for pair in (short, long_src, long_tgt) for s in pair] * 20, TokenizerConfig(40))
    pairs = Pairs(*map(list, zip(short, long_src, long_tgt, short, strict=True)))
    with caplog.at_level("INFO"):
        kept = encode_pairs(pairs, tokenizer, max_len=20)
    assert len(kept) == 2 and "dropped 2 of 4 pairs longer than 20 pieces" in caplog.text
    assert kept.rows([0, 1])[0] == [tokenizer.encode(["A cat."])[0] + [3]] * 2  # the short pairs, EOS = 3
    assert len(encode_pairs(pairs, tokenizer)) == 4  # dev and test keep every pair
