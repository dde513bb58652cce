"""The training split on disk: read once, tokenizer trained once (on a sample), ids encoded once, reused after."""

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import script_env

from transformer import corpus_cache
from transformer.config import Config, DataConfig, TokenizerConfig
from transformer.corpora import read_pairs, read_split
from transformer.corpus_cache import cached_ids, cached_text, cached_tokenizer
from transformer.data import batch_plan, collate, encode_pairs
from transformer.errors import DataError

WORDS = ("cat", "dog", "horse", "boat", "garden", "book", "house", "car", "apple", "table", "flower", "girl", "woman")


def write_corpus(directory, pairs: int, gz: bool = True, extra_src: str = "") -> None:
    src = [f"The {WORDS[i % len(WORDS)]} sees {WORDS[(i * 5) % len(WORDS)]} number {i}." for i in range(pairs)]
    tgt = [f"Le {WORDS[i % len(WORDS)]} voit {WORDS[(i * 5) % len(WORDS)]} numéro {i}." for i in range(pairs)]
    for lang, lines, extra in (("en", src, extra_src), ("fr", tgt, "")):
        payload = ("\n".join(lines) + "\n" + extra).encode()
        if gz:
            (directory / f"train.{lang}.gz").write_bytes(gzip.compress(payload))
        else:
            (directory / f"train.{lang}").write_bytes(payload)


def config_for(tmp_path, vocab_size: int = 120, max_len: int = 100, sample: int = 1_000_000) -> Config:
    data = DataConfig(corpus="files", path=str(tmp_path / "corpus"), cache_dir=str(tmp_path / "cache"), max_len=max_len)
    return Config(data=data, tokenizer=TokenizerConfig(vocab_size=vocab_size, sample_sentences=sample))


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "corpus").mkdir()
    write_corpus(tmp_path / "corpus", 600)
    return tmp_path


def build(config):
    text = cached_text(config.data)
    tokenizer = cached_tokenizer(config, text)
    return tokenizer, cached_ids(config.data, text, tokenizer)


def test_the_cached_ids_give_the_batches_of_the_pairs_read_in_memory(corpus):
    config = config_for(corpus)
    tokenizer, data = build(config)
    in_memory = encode_pairs(read_split(config.data, "train"), tokenizer, config.data.max_len)
    assert len(data) == len(in_memory) == 600
    for indices in batch_plan(data, 400, seed=1, epoch=0)[:5]:
        cached, direct = collate(data, indices), collate(in_memory, indices)
        assert (
            cached.src.equal(direct.src) and cached.tgt_in.equal(direct.tgt_in) and cached.tgt_out.equal(direct.tgt_out)
        )


def test_a_second_start_reads_nothing_but_the_cache(corpus, caplog, monkeypatch):
    config = config_for(corpus)
    tokenizer, data = build(config)

    def no_reading(path):
        raise AssertionError(f"the corpus was read again: {path}")

    monkeypatch.setattr("transformer.corpora.iter_lines", no_reading)
    monkeypatch.setattr("transformer.tokenizer.Tokenizer.train", no_reading)
    monkeypatch.setattr("transformer.corpus_cache.encode_batch", no_reading)
    with caplog.at_level("INFO"):
        again_tokenizer, again = build(config)
    assert caplog.text.count("from the cache") == 3  # text, tokenizer, ids
    assert again_tokenizer.model_bytes == tokenizer.model_bytes
    assert again.rows(range(len(again))) == data.rows(range(len(data)))


def test_a_changed_corpus_tokenizer_or_max_len_is_not_served_stale(corpus, caplog):
    tokenizer, data = build(config_for(corpus))
    with caplog.at_level("INFO"):
        # another vocabulary: a new tokenizer and new ids, the same text
        other_tokenizer, other = build(config_for(corpus, vocab_size=90))
        assert "pairs of text from the cache" in caplog.text and "encoded 600 pairs" in caplog.text
        assert other_tokenizer.vocab_size != tokenizer.vocab_size
        caplog.clear()
        # a shorter max_len filters the cached ids: nothing is encoded again
        limit = int(max(data.src_lens.mean(), data.tgt_lens.mean()))
        shorter = build(config_for(corpus, max_len=limit))[1]
        assert "encoded" not in caplog.text and "dropped" in caplog.text
        assert 0 < len(shorter) < len(data) and max(shorter.src_lens.max(), shorter.tgt_lens.max()) <= limit
        caplog.clear()
        # an edited corpus file is read again
        write_corpus(corpus / "corpus", 650)
        assert len(build(config_for(corpus))[1]) == 650
        assert "read 650 pairs" in caplog.text


def test_the_tokenizer_trains_on_a_random_sample_when_the_corpus_is_larger(tmp_path):
    (tmp_path / "corpus").mkdir()
    rare = "Ωmega ψsi ξi."  # characters in 2 sentences of 20,000: a sample of 200 almost surely misses them
    write_corpus(tmp_path / "corpus", 10_000, extra_src="")
    lines = (tmp_path / "corpus" / "train.en.gz").read_bytes()
    src = gzip.decompress(lines).decode().splitlines()
    src[1234], src[8765] = rare, rare
    (tmp_path / "corpus" / "train.en.gz").write_bytes(gzip.compress(("\n".join(src) + "\n").encode()))
    whole = cached_tokenizer(config_for(tmp_path, vocab_size=200), cached_text(config_for(tmp_path).data))
    sampled = cached_tokenizer(config_for(tmp_path, vocab_size=200, sample=200), cached_text(config_for(tmp_path).data))
    pieces = lambda tokenizer: {tokenizer.sp.id_to_piece(i) for i in range(tokenizer.vocab_size)}  # noqa: E731
    assert "Ω" in pieces(whole) and "Ω" not in pieces(sampled)
    # The sample is drawn with a fixed seed: another process, another cache, the same tokenizer.
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from test_corpus_cache import config_for; from transformer.corpus_cache import cached_text, cached_tokenizer; "
        "c = config_for(Path(sys.argv[2]), vocab_size=200, sample=200); c.data.cache_dir = sys.argv[3]; "
        "sys.stdout.buffer.write(cached_tokenizer(c, cached_text(c.data)).model_bytes)"
    )
    again = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path), str(tmp_path / "other_cache")],
        capture_output=True, env=script_env(), check=True,
    ).stdout  # fmt: skip
    assert again == sampled.model_bytes


def test_a_large_corpus_is_encoded_by_several_processes_into_the_same_ids(corpus, monkeypatch):
    single = build(config_for(corpus))[1]
    monkeypatch.setattr(corpus_cache, "PARALLEL_FROM", 100)  # as if 600 pairs were millions
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    config = config_for(corpus)
    config.data.cache_dir = str(corpus / "other_cache")
    parallel = build(config)[1]
    assert len(parallel.ids.cache_files) == 2  # one shard a process
    assert parallel.rows(range(600)) == single.rows(range(600))


def test_files_stream_in_a_pair_at_a_time(corpus):
    for path in (corpus / "corpus").glob("*.gz"):
        path.unlink()
    write_corpus(corpus / "corpus", 300, gz=False, extra_src="one more source line\n")  # counts differ at the end
    pairs = read_pairs(config_for(corpus).data, "train")
    assert next(pairs) == ("The cat sees cat number 0.", "Le cat voit cat numéro 0.")  # read before the end is seen
    with pytest.raises(DataError, match="301 source lines in .* but 300 target lines"):
        list(pairs)
    assert not list((corpus / "cache").glob("corpora/*/text.arrow"))
    with pytest.raises(DataError, match="301 source lines"):
        cached_text(config_for(corpus).data)
    assert not list((corpus / "cache").glob("corpora/*/*"))  # no half-written text left behind
