"""EmbeddingCache: a content-addressed Parquet store of float32 vectors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from unirec.errors import StoreError
from unirec.features.embed import EmbeddingCache


def _vectors(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def test_empty_cache_finds_nothing(tmp_path):
    cache = EmbeddingCache(tmp_path / "does-not-exist", "text")
    found, vectors = cache.lookup(["a", "b"])
    assert found.tolist() == [False, False]
    assert vectors.shape == (2, 0)
    assert cache.lookup(["a"], dim=3)[1].shape == (1, 3)
    assert len(cache) == 0 and cache.dim is None and cache.parts() == []


def test_round_trip_with_misses_and_repeated_keys(tmp_path):
    cache = EmbeddingCache(tmp_path, "text")
    vecs = _vectors(3)
    part = cache.add(["k0", "k1", "k2"], vecs)
    assert part is not None and part.parent == tmp_path / "text"
    assert part.name.startswith("part-") and part.suffix == ".parquet"
    found, got = cache.lookup(["k2", "nope", "k0", "k2"])
    assert found.tolist() == [True, False, True, True]
    assert got.dtype == np.float32 and got.shape == (4, 4)
    np.testing.assert_array_equal(got[0], vecs[2])
    np.testing.assert_array_equal(got[1], np.zeros(4, np.float32))
    np.testing.assert_array_equal(got[2], vecs[0])
    np.testing.assert_array_equal(got[3], vecs[2])
    assert cache.dim == 4 and len(cache) == 3


def test_duplicate_keys_in_one_add_keep_the_first(tmp_path):
    cache = EmbeddingCache(tmp_path, "text")
    vecs = _vectors(2)
    cache.add(["same", "same"], vecs)
    assert len(cache) == 1
    np.testing.assert_array_equal(cache.lookup(["same"])[1][0], vecs[0])


def test_two_parts_are_both_read_and_compact_merges(tmp_path):
    cache = EmbeddingCache(tmp_path, "img")
    first, second = _vectors(2, seed=1), _vectors(2, seed=2)
    cache.add(["a", "b"], first)
    cache.add(["c", "a"], second)  # "a" again: a second run racing the first
    assert len(cache.parts()) == 2
    assert len(cache) == 3
    found, got = cache.lookup(["c", "b", "a"])
    assert found.all()
    np.testing.assert_array_equal(got[0], second[0])
    np.testing.assert_array_equal(got[1], first[1])
    assert cache.compact() == 3
    assert len(cache.parts()) == 1
    found, after = cache.lookup(["c", "b", "a"])
    assert found.all()
    np.testing.assert_array_equal(after[:2], got[:2])


def test_a_folder_named_like_a_glob_is_read_literally(tmp_path):
    # a store named "recs[1]" holds its cache at recs[1]/cache: "[1]" is not a glob here
    cache = EmbeddingCache(tmp_path / "recs[1]" / "cache", "text")
    vecs = _vectors(2)
    cache.add(["a", "b"], vecs)
    cache.add(["c"], _vectors(1, seed=3))
    found, got = cache.lookup(["b", "a"])
    assert found.all() and cache.dim == 4 and len(cache) == 3
    np.testing.assert_array_equal(got, vecs[::-1])
    assert cache.compact() == 3


def test_dimension_mismatch_is_an_error(tmp_path):
    cache = EmbeddingCache(tmp_path, "text")
    cache.add(["a"], _vectors(1, dim=4))
    with pytest.raises(StoreError, match="4-d"):
        cache.add(["b"], _vectors(1, dim=8))
    with pytest.raises(StoreError, match="namespace"):
        cache.lookup(["a"], dim=8)
    assert len(cache.parts()) == 1  # the refused add wrote nothing


def test_bad_shapes_and_empty_adds(tmp_path):
    cache = EmbeddingCache(tmp_path, "text")
    assert cache.add([], np.zeros((0, 4), np.float32)) is None
    assert cache.parts() == []
    with pytest.raises(ValueError, match="one row per key"):
        cache.add(["a", "b"], _vectors(3))
    with pytest.raises(ValueError, match="namespace"):
        EmbeddingCache(tmp_path, "../escape")


def test_no_temporary_files_are_left(tmp_path):
    cache = EmbeddingCache(tmp_path, "text")
    cache.add(["a"], _vectors(1))
    assert [p.name for p in (tmp_path / "text").iterdir()] == [cache.parts()[0].name]


def test_importing_embed_does_not_import_torch():
    code = (
        "import sys, unirec.features, unirec.features.embed, unirec.features.embedding, "
        "unirec.features.ops, unirec.features.plan, unirec.features.validate; "
        "heavy = {'torch', 'timm', 'sentence_transformers', 'PIL'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
