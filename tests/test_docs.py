"""The reference pages that docs/hooks.py generates for `make docs` cover the whole surface:
every CLI command and every config field (the full build, `mkdocs build --strict`, runs in
CI: .ci/run)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from unirec.cli.main import cli
from unirec.config import json_schema

pytest.importorskip("mkdocs", reason="the docs extra (mkdocs) is not installed")
_spec = importlib.util.spec_from_file_location(
    "unirec_docs_hooks", Path(__file__).resolve().parent.parent / "docs" / "hooks.py")
hooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hooks)


def test_cli_reference_has_every_command() -> None:
    page = hooks.cli_page()
    names = [f"## `unirec {name}`" for name in cli.commands]
    names += [f"## `unirec datasets {name}`" for name in cli.commands["datasets"].commands]
    assert all(name in page for name in names), [n for n in names if n not in page]
    assert "--on-unknown-item" in page  # options come with their help


def test_config_reference_has_every_field_once() -> None:
    page = hooks.config_page()
    schema = json_schema()
    for section, prop in schema["properties"].items():
        model = schema["$defs"][hooks._ref(prop)]
        for field in model["properties"]:
            assert page.count(f"| `{section}.{field}` |") == 1, f"{section}.{field}"
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert all(line.count(" | ") == 3 for line in rows), "a cell broke the table"


def test_guide_links_point_into_the_site() -> None:
    page = hooks.readme_page()
    assert "](docs/" not in page and "](store.md)" in page


def test_architecture_table_allows_every_import_in_the_code() -> None:
    """docs/architecture.md says what each package may import; the code must not do more."""
    import grimp

    text = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    allowed: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 2:
            allowed[cells[0].strip("`")] = {c.strip(" `") for c in cells[1].split(",") if c.strip()}
    graph = grimp.build_graph("unirec", cache_dir=None)
    top = {m.split(".")[1] for m in graph.modules if m.count(".") >= 1}
    facade = {"__main__"}  # the `unirec` facade and `python -m unirec` reach everything
    found = {}
    for pkg in sorted(top - facade):
        for dep in sorted(top - {pkg}):
            if graph.direct_import_exists(importer=f"unirec.{pkg}", imported=f"unirec.{dep}",
                                          as_packages=True):
                found.setdefault(pkg, set()).add(dep)
    assert set(found) <= set(allowed), f"packages the table leaves out: {set(found) - set(allowed)}"
    extra = {pkg: deps - allowed[pkg] for pkg, deps in found.items() if deps - allowed[pkg]}
    assert not extra, f"imports docs/architecture.md does not allow: {extra}"
