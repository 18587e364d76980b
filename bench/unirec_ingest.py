"""unirec's side of the ingest benchmark: featurize's read + validate + typed tables, alone.

Why: ``unirec featurize`` is now a whole compiler (splits, samples with history, vocabularies,
frozen text/image embeddings, tensors, shards), so timing the CLI no longer measures ingestion.
The peer (``bench/peer_naive_ingest.py``) reads the document, checks ids, numbers and
timestamps, and writes users/items/interactions into a DuckDB file; this child does exactly
featurize's share of that work, ``build_raw_tables`` with the default config, on a DuckDB
file set up the way featurize sets up its own (UTC, spill folder beside it, the configured
memory limit), checkpoints it to disk like the peer's close does, and prints one JSON line of
counts from the report so the harness can check both sides kept the same records.

Usage: python bench/unirec_ingest.py DOC [--db OUT.duckdb]   (default: a temporary folder)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb

from unirec.config import Config
from unirec.featurize.raw import TABLE_OF, build_raw_tables


def ingest(doc: Path, db: Path, cfg: Config | None = None) -> dict[str, Any]:
    """Read, validate and store ``doc`` in the DuckDB file ``db``; return the counts."""
    cfg = cfg or Config()
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    try:
        con.execute("SET TimeZone = 'UTC'")
        spill = str(db.parent / ".spill").replace("'", "''")
        con.execute(f"SET temp_directory = '{spill}'")
        if cfg.ingest.memory_limit:
            con.execute(f"SET memory_limit = '{cfg.ingest.memory_limit}'")
        report = build_raw_tables(con, doc, cfg)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    sections = report["sections"]
    counts: dict[str, Any] = {TABLE_OF[s]: v["kept"] for s, v in sections.items()}
    counts["seen"] = {TABLE_OF[s]: v["seen"] for s, v in sections.items()}
    counts["dropped"] = {TABLE_OF[s]: v["dropped"] for s, v in sections.items() if v["dropped"]}
    counts["warnings"] = len(report["warnings"])
    counts["stored"] = {t: counts[t] for t in TABLE_OF.values()}
    return counts


def main(argv: list[str] | None = None) -> int:
    """Command line: ingest DOC into --db (or a temporary file) and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("doc", type=Path)
    parser.add_argument("--db", type=Path, default=None,
                        help="DuckDB file to write (default: one in a temporary folder)")
    args = parser.parse_args(argv)
    if args.db is not None:
        counts = ingest(args.doc, args.db)
    else:
        with tempfile.TemporaryDirectory(prefix="unirec-ingest-") as tmp:
            counts = ingest(args.doc, Path(tmp) / "unirec.duckdb")
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
