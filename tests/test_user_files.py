"""Nothing a user owns is deleted or silently damaged: export writes only where it may, a damaged checkpoint is one
line for every command that reads one, a run directory is held by one training at a time (kill -9 included), and a
training on a busy machine leaves the busy cores alone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import overrides, run_script, script_env

from transformer.cli import dispatch
from transformer.errors import CheckpointError, ToolkitError
from transformer.prepare import RunLock
from transformer.threads import ThreadGovernor, busy_cpu_seconds, threads_for


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    return line


def listing(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# -- export ------------------------------------------------------------------------------------------------------


def test_export_refuses_a_folder_holding_files_it_did_not_write_and_replaces_its_own(demo_run, tmp_path):
    pytest.importorskip("ctranslate2", reason='needs the deploy extra: pip install -e ".[deploy]"')
    run = tmp_path / "run"
    shutil.copytree(demo_run, run)
    before = listing(run)
    result = run_script("export.py", "--checkpoint", str(run), "--out", str(run))  # the run's own folder
    assert one_error_line(result) == (
        f"error: --out {run}: holds files export did not write (.lock…); choose a new or empty directory, "
        "nothing was written"
    )
    assert listing(run) == before  # best.pt and last.pt are still there, byte for byte
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "config.json").write_text("mine")  # a name export writes, in a folder export did not make
    with pytest.raises(ToolkitError, match="holds files export did not write"):
        dispatch(["export", "--checkpoint", str(run), "--out", str(notes)])
    assert listing(notes) == {"config.json": b"mine"}

    out = tmp_path / "ct2"
    for _ in range(2):  # a new folder, then over its own previous export
        assert dispatch(["export", "--checkpoint", str(run), "--out", str(out)]) == 0
        assert {"model.bin", "tokenizer.model", "decoding.json"} <= set(listing(out))
    assert not list(tmp_path.glob(".ct2.*"))  # no staging folder left behind


# -- damaged checkpoints -----------------------------------------------------------------------------------------


def damaged_copy(demo_run, folder):
    """The run with 4 KB overwritten in the middle of best.pt (a weight), as a bad disk or copy leaves it."""
    shutil.copytree(demo_run, folder)
    best = folder / "best.pt"
    data = bytearray(best.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(range(256)) * 16
    best.write_bytes(bytes(data))
    return best


def test_a_damaged_checkpoint_is_one_line_for_every_command_that_reads_it(demo_run, tmp_path):
    best = damaged_copy(demo_run, tmp_path / "run")
    result = run_script("translate.py", "--checkpoint", str(best), "The cat sat on the mat.")
    assert result.stdout == ""
    line = one_error_line(result)
    assert line.startswith(f"error: {best}: damaged: record ") and "fails its CRC-32 check" in line
    commands = {
        "evaluate": ["evaluate", "--checkpoint", str(best), "--split", "test"],
        "average": ["average", str(best), str(demo_run / "last.pt"), "--out", str(tmp_path / "avg.pt")],
        "serve": ["serve", "--checkpoint", str(best), "--port", "0"],
    }
    if _has("ctranslate2"):
        commands["export"] = ["export", "--checkpoint", str(best), "--out", str(tmp_path / "ct2")]
    if not _has("uvicorn"):
        del commands["serve"]
    for name, argv in commands.items():
        with pytest.raises(CheckpointError, match="damaged: record .* fails its CRC-32 check"):
            dispatch(argv)
        assert not (tmp_path / "avg.pt").exists() and not (tmp_path / "ct2").exists(), name

    resumed = tmp_path / "resume"
    shutil.copytree(demo_run, resumed)
    shutil.copy(best, resumed / "last.pt")
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(resumed), "--resume",
                        *overrides(training__max_steps=400))  # fmt: skip
    assert one_error_line(result).startswith(f"error: {resumed / 'last.pt'}: damaged: record ")


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# -- one training per run directory ------------------------------------------------------------------------------


def test_a_second_training_into_a_held_run_directory_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    lock = RunLock(out)  # as a training that is running holds it
    try:
        before = listing(out)
        result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out), *overrides())
        assert one_error_line(result) == (
            f"error: {out} is in use by another training (process {os.getpid()}); "
            "wait for it to end or choose another --out"
        )
        assert listing(out) == before
    finally:
        lock.release()


def test_the_run_directory_is_free_again_after_its_holder_is_killed_with_sigkill(tmp_path):
    out = tmp_path / "run"
    code = f"from transformer.prepare import RunLock; held = RunLock({str(out)!r}); print(1, flush=True); "
    code += "import time; time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=script_env())
    try:
        assert holder.stdout.readline().strip() == "1"
        with pytest.raises(ToolkitError, match=f"in use by another training \\(process {holder.pid}\\)"):
            RunLock(out)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunLock(out).release()  # the kernel dropped the dead process's lock: no stale lock to clear by hand


def test_a_new_training_never_writes_over_files_no_run_wrote(tmp_path):
    """Before: a folder holding the user's config.yaml and metrics.jsonl (but no last.pt) was trained into: the one
    overwritten, the other appended to. A folder an earlier run of ours left without a checkpoint is used again."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.yaml").write_text("# my own notes\n")
    (out / "metrics.jsonl").write_text('{"mine": 1}\n')
    before = listing(out)
    result = run_script("train.py", "--config", "demo", "--out", str(out), *overrides(training__max_steps=1))
    assert one_error_line(result) == (
        f"error: {out} holds config.yaml, metrics.jsonl, which no run wrote and a run would overwrite; "
        "choose another --out"
    )
    assert listing(out) == before and not (out / ".lock").exists()
    ours = tmp_path / "ours"  # a run of ours that stopped before its first checkpoint, then the same command again
    diverged = run_script("train.py", "--config", "demo", "--out", str(ours),
                          *overrides(training__max_steps=2, training__lr=1e9))  # fmt: skip
    assert diverged.returncode == 2 and (ours / "config.yaml").exists() and not (ours / "last.pt").exists()
    again = run_script("train.py", "--config", "demo", "--out", str(ours), *overrides(training__max_steps=1))
    assert again.returncode == 0 and (ours / "last.pt").exists(), again.stderr


def test_translate_never_writes_over_the_file_it_reads(demo_run, tmp_path):
    text = tmp_path / "same.en"
    text.write_text("The cat sat on the mat.\n")
    result = run_script("translate.py", "--checkpoint", str(demo_run), "--input", str(text), "--output", str(text))
    assert one_error_line(result) == (
        f"error: --output {text}: the --input file; writing it would destroy what is read"
    )  # before: the input was emptied, nothing was translated, and the exit code was 0
    assert text.read_text() == "The cat sat on the mat.\n"


def test_a_training_whose_corpus_fails_leaves_no_run_directory(tmp_path):
    out = tmp_path / "runs" / "bad"
    result = run_script("train.py", "--config", "configs/demo.yaml", "--out", str(out),
                        *overrides(data__corpus="files", data__path=str(tmp_path)))  # fmt: skip
    assert result.returncode == 2 and not (tmp_path / "runs").exists()


# -- a busy machine ----------------------------------------------------------------------------------------------


def test_threads_leave_the_cores_other_programs_keep_busy():
    assert [threads_for(2, busy) for busy in (0.0, 0.4, 0.6, 1.0, 1.9, 3.0)] == [2, 2, 1, 1, 1, 1]
    assert [threads_for(8, busy) for busy in (0.0, 2.2, 7.6)] == [8, 6, 1]


def test_busy_cpu_seconds_reads_the_cpus_it_is_given(tmp_path):
    stat = tmp_path / "stat"
    stat.write_text(
        "cpu  300 0 30 900 0 0 0 0 0 0\ncpu0 100 0 10 400 5 0 0 0 0 0\ncpu1 200 0 20 500 5 1 2 3 0 0\nintr 1 2\n"
    )
    ticks = os.sysconf("SC_CLK_TCK")
    assert busy_cpu_seconds({0}, stat) == 110 / ticks
    assert busy_cpu_seconds({0, 1}, stat) == (110 + 226) / ticks
    assert busy_cpu_seconds({0}, tmp_path / "missing") is None


@pytest.mark.skipif(not os.path.exists("/proc/stat") or len(os.sched_getaffinity(0)) < 2, reason="Linux, 2 cores")
def test_a_busy_loop_beside_training_takes_a_thread_away_and_its_end_gives_it_back():
    before, cores = torch.get_num_threads(), min(len(os.sched_getaffinity(0)), 2)
    torch.set_num_threads(cores)  # as a training with threads: 0 starts (other tests set 1)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        governor = ThreadGovernor(interval=0.5)
        time.sleep(0.7)  # this process idle, the loop busy on one core
        governor.update()
        assert governor.threads == torch.get_num_threads() == cores - 1
    finally:
        busy.kill()
        busy.wait()
    try:
        time.sleep(0.7)
        governor.update()
        assert governor.threads == torch.get_num_threads() == cores
    finally:
        torch.set_num_threads(before)


# -- what cannot work is said before the work --------------------------------------------------------------------


def test_paths_layers_and_counts_that_cannot_work_are_one_line_before_any_work(demo_run, tmp_path):
    """Each was found by trying as a hostile user: an empty --out trained into runs/<config> instead, a folder was
    'not found', --layer 99 was refused only after translating, and benchmark --steps 0 divided by zero."""
    for script, args, message in [
        ("train.py", ("--config", "demo", "--out", ""), "--out: an empty path; leave --out out for runs/<config name>"),
        ("train.py", ("--config", str(tmp_path)), f"{tmp_path}: a folder, not a config file"),
        ("translate.py", ("--checkpoint", str(demo_run), "--output", "", "x"),
         "--output: an empty path; leave it out for the terminal"),
        ("translate.py", ("--checkpoint", str(demo_run), "--input", str(tmp_path)),
         f"--input {tmp_path}: a folder, not a file"),
        ("translate.py", ("--checkpoint", str(demo_run), "--show-attention", str(tmp_path / "a.png"), "--layer", "99",
                          "The cat sat on the mat."), "--layer/--head: the model has 1 cross layers and 4 heads"),
        ("evaluate.py", ("--checkpoint", str(demo_run), "--src", str(tmp_path), "--ref", str(tmp_path)),
         f"{tmp_path}: a folder, not a file"),
        ("benchmark.py", ("--config", "demo", "--steps", "0"), "--steps: must be >= 1, got 0"),
        ("benchmark.py", ("--config", "demo", "--warmup", "-1"), "--warmup: must be >= 0, got -1"),
    ]:  # fmt: skip
        result = run_script(script, *args)
        assert one_error_line(result) == f"error: {message}" and result.stdout == "", (script, args)
    assert list(tmp_path.iterdir()) == []  # no heatmap, no run
