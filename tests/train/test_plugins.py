"""The README's custom encoder runs as written; plugins arrive through entry points."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import copy_store
from safetensors import safe_open

import unirec
from unirec.model.encoders import ENCODERS
from unirec.registry import Registry

ROOT = Path(__file__).resolve().parents[2]


def _readme_encoder_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Your own encoder"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_custom_encoder_trains(tmp_path, synthetic_store) -> None:
    store = copy_store(synthetic_store, tmp_path / "store")
    code = _readme_encoder_example().replace('"unirec-store"', repr(str(store)))
    builtin = ENCODERS.get("float_sequence")
    try:
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        assert ENCODERS.get("float_sequence") is namespace["GRUSequenceEncoder"]
    finally:
        unirec.add_encoder("float_sequence", builtin)
    with safe_open(str(store / "model" / "model.safetensors"), "pt") as f:
        assert any(".gru.weight_ih_l0" in key for key in f.keys()), "the GRU was not used"
    assert (store / "model" / "item_embeddings.npy").is_file()


def test_encoders_arrive_through_the_entry_point_group(tmp_path, monkeypatch) -> None:
    """A real installed distribution (a .dist-info on sys.path) declaring an encoder."""
    (tmp_path / "my_encoders.py").write_text(
        "from unirec.model.encoders import Encoder\n\n\n"
        "class AudioEncoder(Encoder):\n    pass\n")
    info = tmp_path / "my_encoders-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-encoders\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[unirec.encoders]\naudio = my_encoders:AudioEncoder\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry: Registry[type] = Registry("encoder", entry_point_group="unirec.encoders")
    assert "audio" in registry.names()
    assert registry.get("audio").__name__ == "AudioEncoder"
