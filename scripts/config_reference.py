"""Write docs/config.md, the reference of every config key, from the dataclasses in transformer/config.py.

Each key's type and default come from its dataclass field, its allowed values from `CHOICES` (what `validate`
checks), and its meaning from its comment in config.py: the comment lines just above the field and the comment
after it on its line. A key without a comment is an error. `--check` writes nothing and fails when docs/config.md
differs from what would be written (tests/test_config.py runs it).

    python scripts/config_reference.py            # after changing a key or its comment in transformer/config.py
    python scripts/config_reference.py --check
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import sys
import tokenize
import types
import typing
from pathlib import Path

from transformer import config

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "config.md"
COMMAND = "python scripts/config_reference.py"

INTRO = f"""\
# Config reference

<!-- Written by `{COMMAND}` from transformer/config.py: change the comments there, then rerun it. -->

A config is a YAML file of up to five sections, `data`, `tokenizer`, `model`, `training` and `decoding`; a key left
out takes its default below. `mini-transformer train --config demo` takes a shipped config by name
(`configs/demo.yaml`, `configs/multi30k_en_fr.yaml`), or any YAML file by path; each shipped file says beside every
key why that recipe chose its value. `--set section.key=value` (repeatable, the value read as YAML) changes one key
on the command line: `--set training.max_steps=100 --set model.norm=post`.

The whole config is validated once, before anything runs: an unknown key (with the closest valid one suggested), a
wrong type, a value out of range or not among the choices below is one line naming the key, and exit code 2. A run
saves its resolved config as `config.yaml` in its directory and inside every checkpoint, so translating, evaluating,
serving and exporting never need the YAML again; `--resume` uses the run's own config and lets `--set` raise only
`training.max_steps`, `max_epochs` and `max_minutes`.
"""


def field_comments(source: str, cls: type) -> dict[str, str]:
    """Each field of `cls` → its comment: the comment lines just above it, then the one after it."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    lines = source.splitlines()
    (node,) = [n for n in ast.parse(source).body if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    found = {}
    for stmt in node.body:
        if not isinstance(stmt, ast.AnnAssign):
            continue
        above, line = [], stmt.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        after = [comments[stmt.end_lineno]] if stmt.end_lineno in comments else []
        found[stmt.target.id] = " ".join(above + after)
    return found


def type_name(hint: typing.Any) -> str:
    if isinstance(hint, types.UnionType):
        return " or ".join(type_name(arg) for arg in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"list of {type_name(typing.get_args(hint)[0])}"
    return "null" if hint is type(None) else hint.__name__


def yaml_value(value: typing.Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return str(value)


def render() -> str:
    source = inspect.getsource(config)
    parts = [INTRO]
    for section, cls in config.SECTIONS.items():
        hints = typing.get_type_hints(cls)
        comments = field_comments(source, cls)
        rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            key = f"{section}.{f.name}"
            if not comments.get(f.name):
                raise SystemExit(f"error: {key} has no comment in transformer/config.py; say what it means there")
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            kind = type_name(hints[f.name])
            if key in config.CHOICES:
                kind += ": " + " \\| ".join(f"`{c}`" for c in config.CHOICES[key])
            meaning = comments[f.name].replace("|", "\\|")
            rows.append(f"| `{key}` | {kind} | `{yaml_value(default)}` | {meaning} |")
        parts.append(f"## {section}\n\n{inspect.getdoc(cls)}\n\n" + "\n".join(rows) + "\n")
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; fail if docs/config.md is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not OUT.is_file() or OUT.read_text(encoding="utf-8") != text:
            sys.exit(f"error: {OUT.relative_to(ROOT)} is not what transformer/config.py gives: run `{COMMAND}`")
        print(f"{OUT.relative_to(ROOT)} is current")
        return
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
