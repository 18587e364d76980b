"""mkdocs hooks: pages generated at build time, so the site never drifts from the code.

- ``index.md``: the README (the guide), its ``docs/`` links made site-relative.
- ``reference/cli.md``: every command's ``--help``, walked from the click group.
- ``reference/config.md``: every config section and field from ``json_schema()``.

Nothing here touches the network; ``make docs`` runs ``mkdocs build --strict``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent


def on_files(files: Files, config: Any) -> Files:
    for uri, text in (("index.md", readme_page()), ("reference/cli.md", cli_page()),
                      ("reference/config.md", config_page())):
        files.append(File.generated(config, uri, content=text))
    return files


def readme_page() -> str:
    """The README with links into docs/ rewritten to the pages of this site."""
    text = (ROOT / "README.md").read_text()
    return re.sub(r"\]\(docs/", "](", text)


def cli_page() -> str:
    """One section per command, its usage and options exactly as ``--help`` prints them."""
    from unirec.cli.main import cli

    out = ["# Command line", "",
           "Generated from the click commands (`unirec COMMAND --help` prints the same). "
           "A problem the user can fix is one `Error: ...` line on stderr and exit code 1.",
           ""]
    for path, command in _walk(cli, ["unirec"]):
        ctx = click.Context(command, info_name=" ".join(path))
        out += [f"## `{' '.join(path)}`", "", "```text", command.get_help(ctx), "```", ""]
    return "\n".join(out)


def _walk(command: click.Command, path: list[str]) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found += _walk(command.commands[name], [*path, name])
    return found


def config_page() -> str:
    """Each section's fields: type, default and why, from the JSON Schema of the config."""
    from unirec.config import json_schema

    schema = json_schema()
    defs = schema["$defs"]
    out = ["# Configuration", "",
           "Generated from `unirec.config.json_schema()` (committed as "
           "`schemas/config.schema.json`). Defaults, then `--config FILE` (JSON or TOML), "
           "then `--set section.key=value`, then dedicated flags; unknown keys are an error.",
           ""]
    for section, prop in schema["properties"].items():
        ref = _ref(prop)
        model = defs[ref] if ref else prop
        out += [f"## `{section}`", "", _cell(model.get("description", "")), ""]
        out += _fields_table(section, model, defs)
    nested = [name for name in defs if name not in
              {_ref(p) for p in schema["properties"].values()}]
    # a sub-section reached through one field (train.warm_start) is keyed by its path
    paths = {_ref(spec): f"{section}.{field}" for section, prop in schema["properties"].items()
             for field, spec in defs.get(_ref(prop) or "", {}).get("properties", {}).items()
             if _ref(spec)}
    for name in nested:
        title = f"`{paths[name]}`" if name in paths else name
        out += [f"## {title}", "", _cell(defs[name].get("description", "")), ""]
        out += _fields_table(paths.get(name), defs[name], defs)
    return "\n".join(out)


def _fields_table(section: str | None, model: dict[str, Any], defs: dict[str, Any]
                  ) -> list[str]:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for field, spec in model.get("properties", {}).items():
        key = f"{section}.{field}" if section else field
        default = json.dumps(spec["default"]) if "default" in spec else \
            "see its section" if _ref(spec) else "required"
        rows.append(f"| `{key}` | {_cell(_type(spec))} | `{default}` | "
                    f"{_cell(spec.get('description', ''))} |")
    return [*rows, ""]


def _ref(spec: dict[str, Any]) -> str | None:
    ref = spec.get("$ref") or next((s.get("$ref") for s in spec.get("allOf", [])), None)
    return ref.rsplit("/", 1)[-1] if ref else None


def _type(spec: dict[str, Any]) -> str:
    if "enum" in spec:
        return " | ".join(json.dumps(v) for v in spec["enum"])
    if "anyOf" in spec:
        return " or ".join(_type(s) for s in spec["anyOf"])
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type(spec.get('items', {}))}"
    if kind == "object" and isinstance(spec.get("additionalProperties"), dict):
        return f"map of {_type(spec['additionalProperties'])}"
    bounds = [f"{op} {spec[k]}" for k, op in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                              ("maximum", "≤"), ("exclusiveMaximum", "<"))
              if k in spec]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def _cell(text: str) -> str:
    """Markdown-table-safe: one line, pipes escaped, rST ``code`` as Markdown `code`."""
    return " ".join(text.replace("|", "\\|").replace("``", "`").split())
