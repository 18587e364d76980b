"""Shared fixtures: small documents with a known content, and ways to run the CLI."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from unirec.cli import cli

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BASE_DOC = {
    "user_data": [
        {
            "user_id": 1,
            "categorical": {"country": "US", "genres": ["drama", "comedy"]},
            "continuous": {"age": 30.0},
            "text": {"bio": "likes long walks"},
            "temporal": {"prev": [10, 11]},
            "image": {"pic": "img/u1.png"},
        },
        {"user_id": 2, "categorical": {"country": "FR", "genres": "drama"},
         "continuous": {"age": 41}},
        {"user_id": 3},
    ],
    "item_data": [
        {
            "item_id": 10,
            "categorical": {"cat": "x"},
            "continuous": {"price": 1.5},
            "text": {"title": "The first item"},
            "temporal": {"ph": [1.0, 2.5]},
        },
        {"item_id": 11, "categorical": {"cat": "y"}},
        {"item_id": 12},
    ],
    "interactions": [
        {"user_id": 1, "item_id": 10, "interaction_type": "view",
         "timestamp": "2024-01-01T00:00:00Z", "weight": 1.0},
        {"user_id": 2, "item_id": 11, "timestamp": 1700000000},
        {"user_id": 3, "item_id": 12, "timestamp": "2024-02-01", "rating": 4},
    ],
}


@pytest.fixture
def doc() -> dict:
    """A fresh deep copy of a small valid document that uses every feature group."""
    return copy.deepcopy(BASE_DOC)


def write_doc(path: Path, doc: dict | str) -> Path:
    """Write a document (a dict, or raw text for malformed JSON)."""
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def invoke(*args: str | Path, input: str | None = None):
    """Run the CLI in-process; stdout and stderr kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=True)


def run_unirec(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m unirec`` in a real subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "unirec", *map(str, args)],
        capture_output=True, text=True, **kwargs,
    )


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root``: a byte-for-byte snapshot."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }
