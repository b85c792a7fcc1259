"""The reference tables in the docs, generated from the code they describe, so that they cannot drift from it:

    python -m resnetbk.doc_tables          # rewrites docs/configuration.md and the marked tables in README.md
    python -m resnetbk.doc_tables --check  # exit 1 if the committed text differs (tests/test_docs.py runs it)

- docs/configuration.md: every key of the run config (resnetbk/config.py) with its default and the comment that
  stands with it in the schema (the line's own comment, or the comment lines just above the field);
- README.md, between `<!-- generated: KIND -->` and `<!-- end: KIND -->`: the configuration keys per section, and
  the metrics.jsonl fields and TensorBoard names of a run (resnetbk/training/metrics.py, the monitored layers).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import os
import re
import sys

from . import config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README, CONFIGURATION = os.path.join(ROOT, "README.md"), os.path.join(ROOT, "docs", "configuration.md")
SECTIONS = (("model", config.ModelConfig), ("train", config.TrainConfig), ("optim", config.OptimConfig),
            ("data", config.DataConfig), ("data.curriculum", config.CurriculumConfig),
            ("data.active", config.ActiveConfig), ("deepspeed", config.DeepSpeedConfig),
            ("sample", config.SampleConfig), ("", config.RunConfig))


def field_comments() -> dict:
    """{(class name, field name): comment} from config.py's source: a field line's trailing comment, else the comment
    lines directly above it."""
    path = config.__file__
    lines = open(path).read().splitlines()
    comments = {}
    for node in ast.parse("\n".join(lines)).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if not isinstance(item, ast.AnnAssign):
                continue
            line = lines[item.lineno - 1]
            trailing = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            above, i = [], item.lineno - 2
            while i >= 0 and lines[i].strip().startswith("#"):
                above.insert(0, lines[i].strip().lstrip("#").strip())
                i -= 1
            comments[(node.name, item.target.id)] = trailing or " ".join(above)
    return comments


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        if dataclasses.is_dataclass(value):
            return "(section)"
    else:
        return "(required)"
    if value == "???":
        return "(required)"
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _keys(cls) -> list:
    return [f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(_default_value(f))]


def _default_value(f: dataclasses.Field):
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def configuration_page() -> str:
    comments = field_comments()
    out = ["# Configuration", "",
           "Every key of a run config, its default and what it does (generated from resnetbk/config.py by "
           "`python -m resnetbk.doc_tables`; a test keeps this page equal to the schema). A YAML file sets any of "
           "them, and `key=value` on the command line overrides it; an unknown key, a wrong type or an impossible "
           "combination stops the run before any work with one line naming the key.", ""]
    for section, cls in SECTIONS:
        out += [f"## `{section}`" if section else "## top level", "", " ".join((cls.__doc__ or "").split()), "",
                "| key | default | meaning |", "|---|---|---|"]
        for f in _keys(cls):
            key = f"{section}.{f.name}" if section else f.name
            meaning = comments.get((cls.__name__, f.name), "").replace("|", "\\|")
            out.append(f"| `{key}` | `{_default(f)}` | {meaning} |")
        out.append("")
    return "\n".join(out)


def readme_configuration() -> str:
    rows = ["| section | keys |", "|---|---|"]
    for section, cls in SECTIONS:
        keys = ", ".join(f"`{f.name}`" for f in _keys(cls))
        rows.append(f"| {f'`{section}`' if section else 'top level'} | {keys} |")
    return "\n".join(rows) + "\n\nEach key's default and meaning: [docs/configuration.md](docs/configuration.md)."


def readme_outputs() -> str:
    from .layers.bk_mixer import BKMixer
    from .training.metrics import RECORD_FIELDS

    fields = "; ".join(f"`{key}` ({meaning})" for key, meaning, _ in RECORD_FIELDS)
    bk = BKMixer.STAT_NAMES + BKMixer.RESPONSE_STAT_NAMES
    monitored = (f"`{BKMixer.stat_prefix}_*` (the BK mixer's statistics of the logged step: "
                 f"{', '.join(f'`{name}`' for name in bk)})")
    scalars = ", ".join(f"`{name}`" for _, _, name in RECORD_FIELDS if name) + \
        f", `{BKMixer.stat_prefix}/<statistic>`, `moe/expert_load/<i>` (share of routed slots per expert)"
    return "\n".join([
        "| file | content |", "|---|---|",
        f"| `metrics.jsonl` | one JSON object per logged step: {fields}; {monitored}. A key is left out where it does "
        "not apply. A resume drops the records after its checkpoint, so each step appears once |",
        f"| `tensorboard/` | one event file (DeepSpeed's monitor plus the trainer's scalars): {scalars}; x axis = "
        "optimizer step |"])


def replace_block(text: str, kind: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- generated: {kind} -->\n)(?:.*?\n)?(<!-- end: {kind} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"error: README.md has no '<!-- generated: {kind} -->' ... '<!-- end: {kind} -->' block")
    return pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)


def generated() -> dict:
    readme = open(README).read()
    readme = replace_block(readme, "configuration", readme_configuration())
    readme = replace_block(readme, "outputs", readme_outputs())
    return {README: readme, CONFIGURATION: configuration_page()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m resnetbk.doc_tables", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="exit 1 if the committed docs differ from the generated text")
    a = p.parse_args(argv)
    stale = []
    for path, text in generated().items():
        current = open(path).read() if os.path.isfile(path) else ""
        if current != text:
            stale.append(os.path.relpath(path, ROOT))
            if not a.check:
                with open(path, "w") as f:
                    f.write(text)
    if a.check and stale:
        print(f"error: {', '.join(stale)} differ from the code; run python -m resnetbk.doc_tables", file=sys.stderr)
        return 1
    print(("rewrote " + ", ".join(stale)) if stale and not a.check else "docs tables up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
