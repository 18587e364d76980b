"""Shards: blocks of samples round-trip exactly, shuffle deterministically, split disjointly."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest
from torch.utils.data import DataLoader

from unirec.store.shards import (
    FIELDS,
    _tar_header,
    _tarinfo_header,
    read_blocks,
    rechunk,
    shard_summary,
    write_shards,
    write_split,
)
from unirec.train.data import ShardStream

N_ROWS, L = 10_007, 5
# DataLoader workers fork; Python >= 3.12 warns when forking a process with threads (DuckDB's).
FORK_OK = pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
BLOCK, SHARD_BLOCKS = 100, 7


def _samples_table(con: duckdb.DuckDBPyConnection) -> None:
    """A ``samples`` table as featurize makes it, with a val split but no test split."""
    con.execute(f"""
        CREATE TABLE samples AS
        SELECT CASE WHEN i % 10 < 8 THEN 'train' ELSE 'val' END AS split,
               (i * 7919 % 523)::INTEGER AS user_index,
               (i * 104729 % 2003 + 1)::INTEGER AS item_index,
               TIMESTAMP '2020-01-01' + to_microseconds(i * 1_000_003) AS time,
               (1 + i % 3 * 0.5)::FLOAT AS weight,
               (i * 13 + 7)::BIGINT AS history_end,
               (i % ({L} + 1))::INTEGER AS history_length,
               (i * 3 + 11)::BIGINT AS position
        FROM range({N_ROWS}) t(i)
    """)


def _expected(con: duckdb.DuckDBPyConnection, split: str) -> dict[str, np.ndarray]:
    rows = con.sql(
        "SELECT user_index, item_index, weight, epoch_us(time), history_end, history_length, "
        "position FROM samples WHERE split = $s ORDER BY position", params={"s": split}
    ).fetchall()
    cols = list(zip(*rows, strict=True))
    out = {k: np.asarray(c, dtype=dt) for (k, dt), c in zip(FIELDS.items(), cols, strict=True)}
    return out


def _concat(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([np.asarray(b[k]) for b in blocks]) for k in FIELDS}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    con = duckdb.connect()
    _samples_table(con)
    out = tmp_path_factory.mktemp("shards")
    paths = {s: write_shards(con, out, s, block_size=BLOCK, shard_blocks=SHARD_BLOCKS, seed=3,
                             shuffle=s == "train")
             for s in ("train", "val", "test")}
    yield con, out, paths
    con.close()


@pytest.mark.parametrize("split", ["train", "val"])
def test_blocks_round_trip_exactly(store, split):
    con, out, paths = store
    blocks = list(read_blocks(paths[split]))
    for block in blocks:
        assert {k: v.dtype.name for k, v in block.items()} == FIELDS
        assert all(v.shape == (len(block["position"]),) for v in block.values())
    sizes = [len(b["position"]) for b in blocks]
    assert all(s == BLOCK for s in sizes[:-1]) and 0 < sizes[-1] <= BLOCK
    assert len(paths[split]) == -(-len(blocks) // SHARD_BLOCKS)
    assert [p.name for p in paths[split]] == [f"{split}-{i:06d}.tar"
                                              for i in range(len(paths[split]))]
    got, want = _concat(blocks), _expected(con, split)
    order = np.argsort(got["position"])
    for k in FIELDS:
        np.testing.assert_array_equal(got[k][order], want[k], err_msg=k)
    summary = shard_summary(paths[split])
    assert summary == {"n_samples": len(want["position"]), "n_blocks": len(blocks),
                       "n_shards": len(paths[split]),
                       "bytes": sum(p.stat().st_size for p in paths[split])}
    # columns and framing only: 40 bytes of data a sample, < 1.2 kB of headers a member
    framing = len(FIELDS) * 1200 * len(blocks) + 10240 * len(paths[split])
    assert 40 * len(blocks) < summary["bytes"] - 40 * summary["n_samples"] < framing
    json.dumps(summary)


def test_train_is_shuffled_deterministically(store, tmp_path):
    con, out, paths = store
    train = _concat(list(read_blocks(paths["train"])))["position"]
    assert (np.diff(train) < 0).sum() > len(train) // 3  # far from sorted
    again = write_shards(con, tmp_path / "again", "train", block_size=BLOCK,
                         shard_blocks=SHARD_BLOCKS, seed=3)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths["train"]]
    other = write_shards(con, tmp_path / "other", "train", block_size=BLOCK,
                         shard_blocks=SHARD_BLOCKS, seed=4)
    other_pos = _concat(list(read_blocks(other)))["position"]
    assert not np.array_equal(other_pos, train)
    assert np.array_equal(np.sort(other_pos), np.sort(train))
    val = _concat(list(read_blocks(paths["val"])))["position"]
    assert np.array_equal(val, np.sort(val))  # val is written in position order


def test_empty_split_writes_nothing(store):
    con, out, paths = store
    assert paths["test"] == [] and not list(out.glob("test-*"))
    assert list(read_blocks([])) == []
    assert list(ShardStream([])) == []
    assert shard_summary([]) == {"n_samples": 0, "n_blocks": 0, "n_shards": 0, "bytes": 0}


def _positions(batches) -> np.ndarray:
    return np.concatenate([b["position"].numpy() for b in batches])


@FORK_OK
@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_and_workers_read_disjoint_shards(store, num_workers):
    con, out, paths = store
    everything = np.sort(_positions(ShardStream(paths["train"])))
    seen = []
    for rank in (0, 1):
        stream = ShardStream(paths["train"], rank=rank, world_size=2, epoch=1)
        loader = DataLoader(stream, batch_size=None, num_workers=num_workers)
        batches = list(loader)
        for b in batches:  # workers ship each block as views of one buffer: same values
            assert {k: str(t.dtype) for k, t in b.items()} == {k: f"torch.{d}"
                                                               for k, d in FIELDS.items()}
        seen.append(_positions(batches))
    assert len(seen[0]) and len(seen[1])
    union = np.concatenate(seen)
    assert len(np.unique(union)) == len(union)  # no duplicates, within or across ranks
    assert np.array_equal(np.sort(union), everything)


def test_shard_order_changes_with_epoch_only(store):
    con, out, paths = store
    first = [ShardStream(paths["train"], epoch=e).assignment()[0] for e in (0, 0, 1)]
    assert first[0] == first[1] and first[0] != first[2]
    fixed = ShardStream(paths["train"], shuffle_shards=False).assignment()[0]
    assert fixed == sorted(paths["train"])


@FORK_OK
@pytest.mark.parametrize("world_size,num_workers,n_shards", [(3, 0, 1), (2, 2, 1), (1, 2, 1),
                                                             (2, 2, 3)])
def test_fewer_shards_than_readers_split_blocks(store, world_size, num_workers, n_shards):
    con, out, paths = store
    few = paths["val"][:n_shards]  # val: 2,001 samples -> 21 blocks -> 3 shards of 7 blocks
    assert len(few) == n_shards
    seen = []
    for rank in range(world_size):
        stream = ShardStream(few, rank=rank, world_size=world_size)
        got = _positions(DataLoader(stream, batch_size=None, num_workers=num_workers))
        assert len(got)  # every rank gets data
        seen.append(got)
    union = np.concatenate(seen)
    assert len(np.unique(union)) == len(union)
    assert np.array_equal(np.sort(union), np.sort(_concat(list(read_blocks(few)))["position"]))


def test_few_shards_are_shared_out_by_blocks_evenly(store):
    """Three shards on two ranks: a shard split would give one rank two shards and the other
    one (and, under Join, keep it waiting); blocks split them to within one block."""
    con, out, paths = store
    few = paths["val"]
    assert len(few) == 3
    counts = [len(_positions(ShardStream(few, rank=r, world_size=2, epoch=1)))
              for r in (0, 1)]
    block = len(next(read_blocks(few))["position"])
    assert abs(counts[0] - counts[1]) <= block, counts
    assert sum(counts) == len(_concat(list(read_blocks(few)))["position"])


def test_rebatching_keeps_every_sample(store):
    con, out, paths = store
    batches = list(ShardStream(paths["train"], batch_size=256, device="cpu"))
    sizes = [len(b["position"]) for b in batches]
    assert all(s == 256 for s in sizes[:-1]) and 0 < sizes[-1] <= 256
    assert all(b["hend"].shape == (n,) for b, n in zip(batches, sizes, strict=True))
    want = np.sort(_concat(list(read_blocks(paths["train"])))["position"])
    assert np.array_equal(np.sort(_positions(batches)), want)
    dropped = list(ShardStream(paths["train"], batch_size=256, drop_last=True))
    assert [len(b["position"]) for b in dropped] == (sizes if sizes[-1] == 256 else sizes[:-1])


@FORK_OK
def test_device_needs_no_workers(store):
    con, out, paths = store
    loader = DataLoader(ShardStream(paths["val"], device="cpu"), batch_size=None, num_workers=1)
    with pytest.raises(RuntimeError, match="num_workers=0"):
        list(loader)


def test_rechunk_is_exact_across_uneven_blocks():
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 50, 40)
    blocks = [{"position": np.arange(s) + 1000 * i, "hend": np.zeros(s, np.int64)}
              for i, s in enumerate(sizes)]
    out = list(rechunk(blocks, 37))
    assert [len(b["position"]) for b in out[:-1]] == [37] * (len(out) - 1)
    assert np.array_equal(np.concatenate([b["position"] for b in out]),
                          np.concatenate([b["position"] for b in blocks]))


def test_null_reference_is_refused(tmp_path):
    con = duckdb.connect()
    con.execute("""CREATE TABLE samples AS SELECT 'train' AS split, 1 AS user_index,
        2 AS item_index, TIMESTAMP '2020-01-01' AS time, 1.0::FLOAT AS weight,
        NULL::BIGINT AS history_end, 2 AS history_length, 0::BIGINT AS position""")
    with pytest.raises(ValueError, match="NULLs in 'hend'"):
        write_shards(con, tmp_path, "train")


def test_tar_is_standard(store):
    """The hand-written ustar reads with tarfile too (webdataset reads it in every test)."""
    import io
    import tarfile

    con, out, paths = store
    with tarfile.open(paths["val"][0]) as tar:
        names = tar.getnames()
        first = np.load(io.BytesIO(tar.extractfile(names[0]).read()))
    assert names[:len(FIELDS)] == [f"b000000000.{k}.npy" for k in FIELDS]
    assert first.dtype == np.int32 and len(first) == BLOCK


def test_write_split_counts_what_shard_summary_reads(store, tmp_path):
    con, _, _ = store
    for split in ("train", "val", "test"):
        written = write_split(con, tmp_path / split, split, block_size=BLOCK,
                              shard_blocks=SHARD_BLOCKS, seed=3, shuffle=split == "train")
        paths = written.pop("paths")
        assert written == shard_summary(paths), split


def test_patched_tar_headers_are_tarfiles_own():
    names = [f"b{j:09d}.{k}.npy" for j in (0, 7, 123456789, 999999999) for k in FIELDS]
    names += ["x", "a" * 99, "a" * 100, "é.npy", "dir/b.npy"]
    for name in names:
        for size in (0, 1, 128 + 4 * 1024, 128 + 8 * 1023, 2**33 - 1):
            assert _tar_header(name, size) == _tarinfo_header(name, size), (name, size)
