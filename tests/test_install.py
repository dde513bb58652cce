"""The toolkit as someone who installed it sees it: a wheel in a fresh virtual environment outside the clone trains
the shipped demo, translates and scores through the `mini-transformer` command; `--help` lists the commands; a
command that needs an extra says which one, and the others work without it."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import ROOT, overrides, script_env

from transformer.config import find_config

EXTRAS = ("fastapi", "uvicorn", "ctranslate2", "matplotlib")  # what the serve, deploy and plot extras bring


def command(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """`mini-transformer ARGS` from this clone (`python -m transformer` is the same command without PATH)."""
    return subprocess.run([sys.executable, "-m", "transformer", *args], capture_output=True, text=True, cwd=cwd,
                          env=env or script_env(), timeout=300)  # fmt: skip


def without_extras(tmp_path: Path) -> dict[str, str]:
    """The environment with every extra's package failing to import, as if not installed."""
    for name in EXTRAS:
        (tmp_path / "blocked" / name).mkdir(parents=True)
        (tmp_path / "blocked" / name / "__init__.py").write_text(f"raise ImportError('no', name={name!r})\n")
    return {**script_env(), "PYTHONPATH": f"{tmp_path / 'blocked'}{os.pathsep}{script_env()['PYTHONPATH']}"}


def test_help_lists_the_commands_and_needs_no_extra(tmp_path):
    env = without_extras(tmp_path)
    result = command("--help", env=env)
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.split("commands:")[1].splitlines() if line.startswith("  ")]
    assert listed == ["train", "translate", "evaluate", "average", "plot", "export", "serve", "benchmark"]
    train = command("train", "--help", env=env)
    assert train.returncode == 0 and "--config" in train.stdout and "usage: mini-transformer train" in train.stdout
    for args in ([], ["nosuch"]):
        assert command(*args, env=env).returncode == 2


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    env = without_extras(tmp_path)
    export = command("export", "--checkpoint", "x", "--out", str(tmp_path / "ct2"), env=env)
    assert export.returncode == 2 and export.stderr.splitlines() == [
        "error: the CTranslate2 engine needs the deploy extra (ctranslate2 is missing): "
        'pip install "mini-transformer[deploy]"'
    ]
    serve = command("serve", "--checkpoint", "x", env=env)
    assert serve.returncode == 2 and serve.stderr.splitlines() == [
        'error: serving needs the serve extra (uvicorn is missing): pip install "mini-transformer[serve]"'
    ]


def test_a_shipped_config_by_name_and_an_unknown_one_in_one_line(tmp_path):
    assert find_config("demo") == ROOT / "configs" / "demo.yaml"  # the clone's; a wheel's are inside the package
    assert find_config("configs/demo.yaml") == Path("configs/demo.yaml")  # a path stays a path
    result = command("train", "--config", "nosuch", cwd=tmp_path)
    assert result.returncode == 2 and result.stderr.splitlines() == [
        "error: config file not found: nosuch (the shipped configs are demo, multi30k_en_fr)"
    ]
    assert not (tmp_path / "runs").exists()


def outer_site_packages() -> list[str]:
    """This interpreter's package folders (a venv's own, and its base's when it sees them), not the clone."""
    return [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]


def test_a_wheel_in_a_fresh_venv_trains_translates_and_scores_through_its_command(tmp_path):
    # The wheel is built from a copy: building in the clone would leave build/ and *.egg-info in it.
    source, dist, venv, work = (tmp_path / name for name in ("source", "dist", "venv", "work"))
    ignore = shutil.ignore_patterns(".git", "runs", "build", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis")
    shutil.copytree(ROOT, source, ignore=ignore)
    pip = ["-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([sys.executable, *pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(dist)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = dist.glob("mini_transformer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"transformer/configs/demo.yaml", "transformer/configs/multi30k_en_fr.yaml"} <= set(names)
    assert "transformer/commands/train.py" in names and "transformer/serve_page.html" in names

    # torch and the other dependencies come from this Python's site-packages, the toolkit only from the wheel. A
    # .pth file names them: `--system-site-packages` would see the base interpreter's, not a venv's (where users are)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python, installed = venv / "bin" / "python", venv / "bin" / "mini-transformer"
    (purelib,) = {Path(p) for p in venv.glob("lib/python*/site-packages")}
    (purelib / "outer.pth").write_text("".join(f"{p}\n" for p in outer_site_packages()))
    subprocess.run([str(python), *pip, "install", "--no-deps", "--no-index", str(wheel)], check=True)
    work.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}

    def run(*args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(args, capture_output=True, text=True, cwd=work, env=env, timeout=300)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr and "warn" not in result.stderr.lower(), result.stderr
        return result

    imported = run(str(python), "-c", "import transformer; print(transformer.__file__)").stdout.strip()
    assert Path(imported).is_relative_to(venv), imported  # not this clone, not its editable install
    train = run(
        str(installed), "train", "--config", "demo", *overrides(training__max_steps=100, training__eval_every=50)
    )
    assert "checkpoints in runs/demo" in train.stdout and (work / "runs" / "demo" / "best.pt").is_file()
    sentences = ["The cat sat on the mat.", "Two small dogs go to the garden."]
    translated = run(str(installed), "translate", "--checkpoint", "runs/demo", *sentences).stdout.splitlines()
    assert len(translated) == 2 and all(translated) and translated[0] != translated[1]
    scored = run(str(installed), "evaluate", "--checkpoint", "runs/demo", "--split", "test").stdout
    assert scored.startswith("BLEU ") and "20 sentences translated" in scored
    assert (work / "runs" / "demo" / "test.hyp").read_text().count("\n") == 20
