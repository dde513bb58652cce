"""Checkpoints are written atomically, read safely, and every failure is one line naming the file."""

import resource
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import ROOT, overrides, run_script

from transformer.checkpoint import FORMAT_VERSION, load_checkpoint, read_checkpoint, save_checkpoint
from transformer.errors import CheckpointError


def minimal_state(**extra):
    return {"config": {}, "tokenizer": torch.zeros(1), "model": {}, **extra}


def test_bad_checkpoints_get_one_clear_line(demo_run, tmp_path):
    good = (demo_run / "last.pt").read_bytes()
    cases = {"empty.pt": b"", "truncated.pt": good[: len(good) // 2], "garbage.pt": b"not a checkpoint at all" * 10}
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(tmp_path / name)
        result = run_script("translate.py", "--checkpoint", str(tmp_path / name), "hello")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: {tmp_path / name}")
        assert "weights_only=False" not in result.stderr  # never advise unsafe loading

    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this toolkit"):
        load_checkpoint(tmp_path / "foreign.pt")
    state = load_checkpoint(demo_run / "last.pt")
    torch.save({key: value for key, value in state.items() if key != "tokenizer"}, tmp_path / "no_tokenizer.pt")
    with pytest.raises(CheckpointError, match=r"this toolkit \(missing tokenizer\)$"):  # not every required key
        load_checkpoint(tmp_path / "no_tokenizer.pt")


def test_a_checkpoint_with_nan_weights_is_refused_not_translated_into_empty_lines(demo_run, tmp_path):
    """Whole records with valid CRCs, but one weight is nan (a copy edited, or a run of another tool): before, it
    translated every sentence into an empty line with exit code 0."""
    state = load_checkpoint(demo_run / "last.pt")
    name = next(iter(state["model"]))
    state["model"][name].view(-1)[0] = float("nan")
    torch.save(state, tmp_path / "nan.pt")
    result = run_script("translate.py", "--checkpoint", str(tmp_path / "nan.pt"), "hello")
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nan.pt'}: damaged: weights {name} hold nan or inf; use another checkpoint or train again"
    ]
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_the_config_are_one_line(demo_run, tmp_path):
    state = load_checkpoint(demo_run / "best.pt")
    state["config"]["model"]["d_ff"] *= 2  # the saved feed-forward weights no longer fit
    torch.save(state, tmp_path / "misfit.pt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        read_checkpoint(tmp_path / "misfit.pt").build_model()
    result = run_script("translate.py", "--checkpoint", str(tmp_path / "misfit.pt"), "hello")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "weights do not fit" in result.stderr


def test_a_checkpoint_never_runs_code_when_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('x')",))

    torch.save({"format_version": FORMAT_VERSION, "config": {}, "tokenizer": Evil(), "model": {}}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError, match="e.pt"):
        load_checkpoint(tmp_path / "e.pt")
    assert not marker.exists()


def test_format_version_is_checked(tmp_path):
    save_checkpoint(minimal_state(), tmp_path / "v.pt")
    assert load_checkpoint(tmp_path / "v.pt")["format_version"] == FORMAT_VERSION
    state = torch.load(tmp_path / "v.pt", weights_only=True)
    state["format_version"] = FORMAT_VERSION + 1
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load_checkpoint(tmp_path / "future.pt")


def limit_file_size(size: int):
    """For a subprocess: files may not grow beyond `size` bytes; the kernel fails the write (EFBIG)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # report the failed write instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


SAVE_TWICE = """
import sys, torch
from transformer.checkpoint import load_checkpoint, save_checkpoint
from transformer.errors import CheckpointError
path = sys.argv[1]
save_checkpoint({"config": {}, "tokenizer": torch.zeros(1), "model": {}, "step": 1}, path)
try:
    save_checkpoint({"config": {}, "tokenizer": torch.zeros(1), "model": {"w": torch.randn(100_000)}, "step": 2}, path)
except CheckpointError as e:
    print(e)
print("step", load_checkpoint(path)["step"])
"""


def test_a_real_failed_write_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    """The kernel refuses to let the file grow (RLIMIT_FSIZE), as a full disk would: torch raises RuntimeError."""
    path = tmp_path / "last.pt"
    result = subprocess.run(
        [sys.executable, "-c", SAVE_TWICE, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=limit_file_size(100_000),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"cannot write checkpoint {path}: File too large", "step 1"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temporary file is gone


def test_training_that_cannot_write_its_checkpoint_stops_with_one_line(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "scripts/train.py", "--config", "configs/demo.yaml", "--out", str(out), *overrides()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        preexec_fn=limit_file_size(600_000),  # the tokenizer (~250 KB) fits, a checkpoint (~1.4 MB) does not
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot write checkpoint {out / 'last.pt'}: File too large"]


WRITER = """
import sys, torch
from transformer.checkpoint import save_checkpoint
save_checkpoint({"config": {}, "tokenizer": torch.zeros(1), "model": {"w": torch.randn(50_000_000)}}, sys.argv[1])
"""


def test_a_checkpoint_is_never_seen_half_written(tmp_path):
    """While a 200 MB checkpoint is written over a small one, the path only ever holds one of the two whole files;
    a kill in the middle of the write leaves the old one."""
    path = tmp_path / "last.pt"
    save_checkpoint(minimal_state(step=1), path)
    old_size = path.stat().st_size
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT)
    sizes = set()
    while writer.poll() is None:
        sizes.add(path.stat().st_size)
    assert writer.returncode == 0
    new_size = path.stat().st_size
    assert sizes <= {old_size, new_size} and new_size > 100 * old_size

    save_checkpoint(minimal_state(step=1), path)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT)
    deadline = time.time() + 60
    while not list(tmp_path.glob(".last.pt.*.tmp")) and path.stat().st_size == old_size and time.time() < deadline:
        time.sleep(0.001)
    time.sleep(0.01)  # inside the write (a 200 MB write and fsync take far longer)
    writer.kill()
    writer.wait()
    assert load_checkpoint(path)["step"] == 1


def test_a_version_1_checkpoint_is_upgraded_and_translates_the_same(demo_run, tmp_path):
    from transformer import Translator

    state = load_checkpoint(demo_run / "best.pt")
    old_names = {f"{name}_norm": f"{name}_block.norm" for name in ("self_attention", "cross_attention", "feed_forward")}
    v1 = {}
    for key, value in state["model"].items():
        for new, old in old_names.items():
            if key.startswith("encoder_layers."):
                old = old.replace("self_attention_block", "attention_block")
            key = key.replace(f".{new}.", f".{old}.")
        v1[key] = value
    assert v1.keys() != state["model"].keys()
    torch.save({**state, "format_version": 1, "model": v1}, tmp_path / "v1.pt")
    sentences = ["The black cat sleeps near the house.", "Two small dogs go to the garden."]
    expected = Translator.from_checkpoint(demo_run / "best.pt").translate(sentences)
    assert Translator.from_checkpoint(tmp_path / "v1.pt").translate(sentences) == expected
