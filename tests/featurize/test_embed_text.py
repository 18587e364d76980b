"""TextEmbedder with the real all-MiniLM-L6-v2 shipped in a wheel (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from unirec.errors import ConfigError
from unirec.features.embed import EmbeddingCache, TextEmbedder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
    """One loaded model for the module: loading costs ~10 s, mostly the import."""
    emb = TextEmbedder(batch_size=16, show_progress_bar=False)
    assert emb.dim == 384
    return emb


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_vectors_are_384_d_unit_length_and_dedup_strings(embedder):
    before_calls, before_n = embedder.n_model_calls, embedder.n_encoded
    texts = ["red shoes", "blue hat", "red shoes", "", "blue hat", "red shoes"]
    out = embedder.embed(texts)
    assert out.shape == (6, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-4)
    assert embedder.n_encoded - before_n == 3  # distinct strings, each once
    assert embedder.n_model_calls - before_calls == 1
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[5])
    np.testing.assert_array_equal(out[1], out[4])
    assert _cos(out[0], out[1]) < 0.99  # different strings, different vectors


def test_semantic_sanity(embedder):
    cat, kitten, tax = embedder.embed(
        ["a cat sat on the mat", "a kitten sitting on a rug", "quarterly tax filing deadline"]
    )
    assert _cos(cat, kitten) > _cos(cat, tax) + 0.3


def test_cache_makes_a_second_run_free_and_only_new_strings_are_encoded(embedder, tmp_path):
    titles = [f"product title number {i}" for i in range(40)]
    cache = EmbeddingCache(tmp_path, "text")
    first = embedder.embed(titles + titles[:5], cache)
    assert len(cache) == 40

    fresh = TextEmbedder(show_progress_bar=False)  # a new process would start like this
    again = fresh.embed(titles + titles[:5], EmbeddingCache(tmp_path, "text"))
    assert fresh.n_model_calls == 0 and fresh.n_encoded == 0
    assert fresh._st is None  # the model was never even loaded
    np.testing.assert_array_equal(again, first)

    changed = titles[10:] + ["brand new title", "another new one", "brand new title"]
    fresh.embed(changed, cache)
    assert fresh.n_encoded == 2 and fresh.n_model_calls == 1
    assert len(cache) == 42


def test_cache_hits_equal_fresh_encodings(embedder, tmp_path):
    cache = EmbeddingCache(tmp_path, "text")
    texts = ["alpha", "beta", "gamma"]
    embedder.embed(texts[:2], cache)
    mixed = embedder.embed(texts, cache)
    np.testing.assert_allclose(mixed, embedder.embed(texts), atol=1e-5)


def test_empty_input(embedder):
    assert embedder.embed([]).shape == (0, 384)


def test_model_ids_and_keys():
    default = TextEmbedder()
    assert default.model_id == "all-MiniLM-L6-v2"
    assert default.key("x") != default.key("y")
    assert default.key("x") != TextEmbedder("some-org/other-model").key("x")


def test_bad_model_names_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TextEmbedder(str(tmp_path / "no-such-folder"))
    with pytest.raises(ConfigError, match="empty"):
        TextEmbedder(" ")
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(ConfigError, match="cannot load text model"):
        _ = TextEmbedder(str(tmp_path / "empty-model")).dim


def test_non_strings_are_refused(embedder):
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        embedder.embed(["ok", None])  # type: ignore[list-item]
