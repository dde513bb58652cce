"""The instruction-set cap CI applies (.ci/run) took effect, so the capped run really tests the lower instruction set.

Each check runs when its library's cap is set in the environment and is skipped otherwise. MKL
(`MKL_ENABLE_INSTRUCTIONS`) and oneDNN (`ONEDNN_MAX_CPU_ISA`) are capped too, but neither says from inside the process
which instruction set it chose, so they are not checked here.
"""

import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT, script_env


@pytest.mark.skipif("ATEN_CPU_CAPABILITY" not in os.environ, reason="no ATEN_CPU_CAPABILITY cap set")
def test_torch_runs_its_kernels_at_the_capped_instruction_set():
    assert torch.backends.cpu.get_cpu_capability() == os.environ["ATEN_CPU_CAPABILITY"].upper()


@pytest.mark.skipif("CT2_FORCE_CPU_ISA" not in os.environ, reason="no CT2_FORCE_CPU_ISA cap set")
def test_ctranslate2_selects_the_capped_instruction_set(demo_run, tmp_path):
    pytest.importorskip("ctranslate2", reason='needs the deploy extra: pip install -e ".[deploy]"')
    from transformer.deploy import export_ctranslate2

    model = export_ctranslate2(demo_run, tmp_path / "ct2", "int8")
    load = f"import ctranslate2; ctranslate2.Translator({str(model)!r}, device='cpu')"
    result = subprocess.run([sys.executable, "-c", load], capture_output=True, text=True, cwd=ROOT,
                            env={**script_env(), "CT2_VERBOSE": "1"}, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"Selected ISA: {os.environ['CT2_FORCE_CPU_ISA'].upper()}" in result.stderr, result.stderr
