"""The Quickstart as a newcomer runs it, with what it installs and nothing more: no matplotlib (the plot extra), so
no curves.png, and not a word about it; nothing in its output warns."""

import os
import re
import subprocess
import sys

from helpers import ROOT, overrides, script_env
from test_end_to_end import SENTENCES

# What a warning looks like: Python's warnings, a library's, and our own "... not drawn" notices.
WARNING = re.compile(r"warn|deprecat|not drawn|traceback|error", re.IGNORECASE)


def test_the_quickstart_without_matplotlib_says_nothing_of_curves_and_nothing_warns(tmp_path):
    blocked = tmp_path / "blocked" / "matplotlib"  # first on the path and failing to import: as if not installed
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('not installed', name='matplotlib')\n")
    env = {**script_env(), "PYTHONPATH": f"{blocked.parent}{os.pathsep}{script_env()['PYTHONPATH']}"}
    out = tmp_path / "demo"
    tiny = overrides(training__max_steps=40, training__eval_every=20, training__precision="auto")  # two validations

    def quickstart(script: str, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], capture_output=True,
                                text=True, cwd=ROOT, env=env, timeout=600)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert not [line for line in result.stderr.splitlines() if WARNING.search(line)], result.stderr
        return result

    quickstart("train.py", "--config", "configs/demo.yaml", "--out", str(out), *tiny)
    assert (out / "best.pt").is_file() and (out / "metrics.jsonl").is_file() and not (out / "curves.png").exists()
    translations = quickstart("translate.py", "--checkpoint", str(out), *SENTENCES).stdout.splitlines()
    assert len(translations) == len(SENTENCES)
