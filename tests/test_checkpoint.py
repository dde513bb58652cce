import pytest
import torch
from conftest import run_script

from transformer.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from transformer.errors import CheckpointError


def test_bad_checkpoints_get_one_clear_line(demo_run, tmp_path):
    good = (demo_run / "last.pt").read_bytes()
    cases = {
        "empty.pt": b"",
        "truncated.pt": good[: len(good) // 2],
        "garbage.pt": b"not a checkpoint at all" * 10,
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(CheckpointError, match=name):
            load_checkpoint(tmp_path / name)
        result = run_script("translate.py", "--checkpoint", str(tmp_path / name), "hello")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert result.stderr.startswith(f"error: {tmp_path / name}")

    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a checkpoint of this toolkit"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_never_runs_code_when_loaded(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('pwned', 'w').write('x')",))

    torch.save({"format_version": FORMAT_VERSION, "config": {}, "tokenizer": Evil(), "model": {}}, tmp_path / "e.pt")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "e.pt")
    assert not (tmp_path / "pwned").exists()


def test_format_version_is_checked(tmp_path):
    save_checkpoint({"config": {}, "tokenizer": torch.zeros(1), "model": {}}, tmp_path / "v.pt")
    assert load_checkpoint(tmp_path / "v.pt")["format_version"] == FORMAT_VERSION
    state = torch.load(tmp_path / "v.pt", weights_only=True)
    state["format_version"] = FORMAT_VERSION + 1
    torch.save(state, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1} is not supported"):
        load_checkpoint(tmp_path / "future.pt")


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"config": {}, "tokenizer": torch.zeros(1), "model": {}, "step": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise OSError(28, "No space left on device")

    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint({"config": {}, "tokenizer": torch.zeros(1), "model": {}, "bad": Unpicklable()}, path)
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
