from pathlib import Path

import pytest
import yaml
from helpers import ROOT, run_script
from hypothesis import given, settings
from hypothesis import strategies as st

from transformer.config import Config, ConfigError, apply_overrides, config_from_dict, load_config


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["demo.yaml", "multi30k_en_fr.yaml"])
def test_every_key_of_the_shipped_configs_is_commented(name):
    text = (ROOT / "configs" / name).read_text()
    keys = [line for line in text.splitlines() if line.startswith("  ") and not line.strip().startswith("#")]
    assert len(keys) > 20
    for line in keys:
        assert "#" in line, f"{name}: key {line.split(':')[0].strip()!r} has no comment"


def test_the_config_reference_is_current():
    """docs/config.md is written from config.py's dataclasses and comments: a key, default, choice or comment
    changed there without rewriting it fails here, and the message gives the command that rewrites it."""
    result = run_script("config_reference.py", "--check")
    assert result.returncode == 0, result.stderr.strip()
    reference = (ROOT / "docs" / "config.md").read_text()
    for section, keys in Config().to_dict().items():
        for key in keys:
            assert f"| `{section}.{key}` |" in reference


@pytest.mark.parametrize("name", ["demo.yaml", "multi30k_en_fr.yaml"])
def test_shipped_configs_load(name, monkeypatch):
    monkeypatch.chdir(ROOT)  # data.path is relative to where you run, as in the README's commands
    path = ROOT / "configs" / name
    data_path = yaml.safe_load(path.read_text())["data"].get("path")
    if data_path is not None and not (ROOT / data_path).is_dir():
        pytest.skip(f"{name} reads {data_path}, which is absent here (CI has the Multi30k files beside the clone)")
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.data.path is None or (Path(config.data.path).is_absolute() and Path(config.data.path).is_dir())


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model:\n  d_modle: 256\n", "did you mean 'd_model'"),
        ("modle:\n  d_model: 256\n", "did you mean 'model'"),
        ("model:\n  d_model: 250\n  heads: 4\n", "model.d_model: 250 is not divisible by model.heads=4"),
        ("model:\n  dropout: 1.5\n", "model.dropout: must be in [0, 1)"),
        ("model:\n  heads: four\n", "model.heads: expected int, got 'four'"),
        ("training:\n  precision: fp16\n", "training.precision: got 'fp16'; choose one of fp32, bf16, auto"),
        ("training:\n  lr: [1]\n", "training.lr: expected float"),
        ("data:\n  corpus: files\n  path: /does/not/exist\n", "data.path: directory not found: /does/not/exist"),
        ("data:\n  corpus: wmt\n", "data.corpus: got 'wmt'"),
        ("model: [1, 2\n", "YAML syntax error"),
        ("", "the config file is empty"),
        ("- 1\n- 2\n", "expected a mapping"),
        (f"training:\n  lr: {'9' * 400}\n", "training.lr: must be a finite number, got 999"),  # was OverflowError
        (f"training:\n  threads: {'9' * 30}\n", "training.threads: must be between -2**63 and 2**63"),
        ("training:\n  compile: sometimes\n", "training.compile: must be true, false or auto, got sometimes"),
    ],
)
def test_config_errors_name_the_key_and_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, text))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_overrides_are_parsed_and_checked():
    config = load_config(
        ROOT / "configs" / "demo.yaml", ["training.max_steps=7", "model.norm=post", "training.lr=1e-3"]
    )
    assert config.training.max_steps == 7 and config.model.norm == "post"
    assert config.training.lr == 0.001  # YAML 1.1 reads 1e-3 as a string; a float key accepts it
    with pytest.raises(ConfigError, match="training.max_steps: expected int"):
        apply_overrides(config, ["training.max_steps=many"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        apply_overrides(config, ["max_steps=3"])
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        apply_overrides(config, ["training.max_step=3"])


def test_a_config_error_is_one_line_and_exit_code_2(tmp_path):
    path = write(tmp_path, "model:\n  d_model: 250\n  heads: 4\n")
    result = run_script("train.py", "--config", str(path), "--out", str(tmp_path / "run"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {path}: model.d_model: 250 is not divisible by model.heads=4"
    ]
    missing = run_script("train.py", "--config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "config file not found" in missing.stderr


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5000),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
)
base = Config().to_dict()
keys = [(s, k) for s, section in base.items() for k in section] + [("model", "bogus"), ("nosection", "x")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(keys), values), max_size=4))
def test_random_mutations_give_a_valid_config_or_a_config_error(mutations):
    raw = yaml.safe_load(yaml.safe_dump(base))
    for (section, key), value in mutations:
        raw.setdefault(section, {})[key] = value
    try:
        config = config_from_dict(raw)
    except ConfigError:
        return
    assert config.model.d_model % config.model.heads == 0


def test_a_key_given_twice_is_one_line_with_both_line_numbers(tmp_path):
    path = write(tmp_path, "training:\n  lr: 0.002\n  max_steps: 3\n  lr: 0.5\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: training.lr is given twice, at lines 2 and 4; keep one"
    section = write(tmp_path, "training:\n  lr: 0.002\nmodel:\n  heads: 4\ntraining:\n  max_steps: 3\n")
    with pytest.raises(ConfigError, match="training is given twice, at lines 1 and 5"):
        load_config(section)
    with pytest.raises(ConfigError, match="--set training.betas: x is given twice, at lines 1 and 1"):
        apply_overrides(Config(), ["training.betas={x: 1, x: 2}"])


def test_an_alias_bomb_is_refused_in_one_short_line(tmp_path):
    """Nine nested lists of nine aliases expand to 387 million values; six levels already to half a million, which
    PyYAML builds in seconds and a type error would print whole. The count is made on the file's own nodes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 6)]
    bomb = write(tmp_path, "\n".join(["anchors:", *(f"  {line}" for line in lines), "training:", "  betas: *a5", ""]))
    with pytest.raises(ConfigError) as error:
        load_config(bomb)
    message = str(error.value)
    assert "aliases expand to more than 10,000 values" in message and len(message) < 200
    self_referring = write(tmp_path, "training:\n  betas: &b [1, *b]\n")
    with pytest.raises(ConfigError, match="training.betas: a YAML alias refers to its own anchor"):
        load_config(self_referring)
    long_value = write(tmp_path, "training:\n  schedule: " + "x" * 100_000 + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(long_value)
    assert len(str(error.value)) < 300 and "choose one of inverse_sqrt" in str(error.value)
