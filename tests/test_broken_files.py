"""A broken gzip file anywhere text is read (training and dev corpora, translate --input, evaluate --src/--ref, the
Multi30k download cache) is one line naming it and saying what is wrong, exit code 2, and nothing written: no
half translation, no run directory, no cache entry. A truncated file is what an interrupted download leaves."""

import gzip
import io
import os

import pytest
from helpers import overrides, run_script
from test_end_to_end import SENTENCES

from transformer.config import DataConfig
from transformer.corpora import MULTI30K_URL, read_split
from transformer.errors import DataError

TRUNCATED = "truncated gzip file (Compressed file ended before the end-of-stream marker was reached)"


def truncate(path):
    """The first half of the file's bytes, as an interrupted download leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt(path):
    """The header is fine, the compressed data is not: its first block (after the 10-byte header) has the reserved
    block type."""
    data = bytearray(path.read_bytes())
    data[10] = 0xFF
    path.write_bytes(bytes(data))


def write_gz(path, lines):
    path.write_bytes(gzip.compress("".join(line + "\n" for line in lines).encode()))
    return path


def errors(result) -> list[str]:
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("error")]


def corpus(directory):
    """The demo's sentences as line files: train and val, gzipped."""
    directory.mkdir()
    src = [f"{sentence} ({i})" for i, sentence in enumerate(SENTENCES * 400)]
    for split, size in (("train", 1200), ("val", 20)):
        write_gz(directory / f"{split}.en.gz", src[:size])
        write_gz(directory / f"{split}.fr.gz", [s.replace("The", "Le") for s in src[:size]])
    return directory


def train(tmp_path, data):
    out, cache = tmp_path / "run", tmp_path / "cache"
    args = overrides(data__corpus="files", data__path=data, data__cache_dir=cache, training__max_steps=2)
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), *args)
    assert not out.exists()  # no run directory, so no checkpoint
    assert not [p for p in cache.rglob("*") if p != cache / "corpora"]  # no cache entry, not even an empty one
    return result


def test_training_on_a_truncated_corpus_writes_nothing(tmp_path):
    data = corpus(tmp_path / "corpus")
    truncate(data / "train.fr.gz")
    assert errors(train(tmp_path, data)) == [f"error: {data / 'train.fr.gz'}: {TRUNCATED}"]


def test_a_dev_split_that_is_not_gzip_fails_before_anything_is_written(tmp_path):
    data = corpus(tmp_path / "corpus")
    (data / "val.en.gz").write_bytes(os.urandom(500))
    assert errors(train(tmp_path, data)) == [f"error: {data / 'val.en.gz'}: not a gzip file"]


def test_translate_checks_a_gzip_input_whole_before_it_writes_a_line(demo_run, tmp_path):
    source, out = write_gz(tmp_path / "in.en.gz", SENTENCES * 400), tmp_path / "out.fr"  # more than one chunk
    truncate(source)
    result = run_script("translate.py", "--checkpoint", str(demo_run), "--input", str(source), "--output", str(out))
    assert errors(result) == [f"error: {source}: {TRUNCATED}"] and not out.exists()
    corrupt(write_gz(source, SENTENCES * 400))
    result = run_script("translate.py", "--checkpoint", str(demo_run), "--input", str(source))
    assert errors(result) == [
        f"error: {source}: corrupt gzip file (Error -3 while decompressing data: invalid block type)"
    ]
    assert result.stdout == ""


def test_evaluate_names_a_broken_reference_and_writes_no_hypotheses(demo_run, tmp_path):
    src, ref, hyp = write_gz(tmp_path / "t.en.gz", SENTENCES), tmp_path / "t.fr.gz", tmp_path / "t.hyp"
    ref.write_bytes(os.urandom(100))
    result = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(src), "--ref", str(ref),
                        "--hyp", str(hyp))  # fmt: skip
    assert errors(result) == [f"error: {ref}: not a gzip file"] and not hyp.exists()


def test_the_downloader_keeps_only_whole_files_and_fetches_a_broken_one_again(tmp_path, monkeypatch, caplog):
    whole = gzip.compress(b"one\ntwo\n" * 500)
    served = []
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: served.append(url) or io.BytesIO(payload))
    config = DataConfig(corpus="multi30k", cache_dir=str(tmp_path), dev_split="val")
    url, cached = MULTI30K_URL.format(name="val", lang="en"), tmp_path / "multi30k" / "val.en.gz"

    payload = whole[: len(whole) // 2]  # the connection dropped halfway, without an error
    with pytest.raises(DataError) as error:
        read_split(config, "dev")
    assert str(error.value) == f"cannot download {url}: {TRUNCATED}; try again"
    assert list(cached.parent.iterdir()) == []

    cached.write_bytes(payload)  # left in the cache by an older version, or copied there
    payload = whole
    assert read_split(config, "dev").src == ["one", "two"] * 500  # fetched again, not read as a shorter corpus
    assert f"{cached}: {TRUNCATED}; downloading it again" in caplog.messages
    assert served[-2:] == [url, url.replace(".en.", ".fr.")] and cached.read_bytes() == whole


def test_evaluate_into_a_missing_folder_names_the_file_asked_for(demo_run, tmp_path):
    """The hypotheses are written atomically through a temporary file beside them; the error names the user's path."""
    src, hyp = write_gz(tmp_path / "t.en.gz", SENTENCES), tmp_path / "missing" / "t.hyp"
    ref = write_gz(tmp_path / "t.fr.gz", SENTENCES)
    result = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(src), "--ref", str(ref),
                        "--hyp", str(hyp))  # fmt: skip
    assert errors(result) == [f"error: --hyp {hyp}: folder not found: {hyp.parent}"]  # said before translating
    hyp.parent.mkdir()
    hyp.mkdir()  # a folder where the file should go: before, the error named the temporary file
    result = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(src), "--ref", str(ref),
                        "--hyp", str(hyp))  # fmt: skip
    assert errors(result) == [f"error: --hyp {hyp}: a folder, not a file"]


def test_empty_files_to_score_or_an_empty_dev_split_are_one_line(demo_run, tmp_path):
    """Before: evaluate of two empty files was an IndexError traceback; training on an empty dev split a traceback
    from deep in Arrow."""
    empty = write_gz(tmp_path / "e.en.gz", [])
    result = run_script("evaluate.py", "--checkpoint", str(demo_run), "--src", str(empty), "--ref", str(empty))
    assert errors(result) == [f"error: {empty}: no sentences to score (the file is empty)"]
    data = corpus(tmp_path / "data")
    for side in ("en", "fr"):
        write_gz(data / f"val.{side}.gz", [])
    changes = overrides(data__corpus="files", data__path=str(data), data__cache_dir=tmp_path / "c")
    result = run_script("train.py", "--config", "demo", "--out", str(tmp_path / "run"), *changes)
    assert errors(result) == ["error: data.dev_split: 'val' of the files corpus has no pairs"]
    assert not (tmp_path / "run").exists()
