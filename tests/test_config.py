"""The typed config: precedence, unknown keys, and the committed JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import invoke, write_doc

from unirec.config import Config, json_schema, load_config
from unirec.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_committed_schema_matches_the_models() -> None:
    committed = json.loads((ROOT / "schemas" / "config.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run `make schemas`"


def test_every_field_says_why() -> None:
    def walk(model):
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, Config.__mro__[1]):
                walk(sub)

    walk(Config)


def test_precedence_file_then_set_then_flags(tmp_path) -> None:
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"validate": {"on_unknown_item": "drop",
                                                 "on_unknown_user": "drop"}}))
    cfg = load_config(cfg_file, ["validate.on_unknown_user=error"],
                      {"validate.on_duplicate_id": "first"})
    assert cfg.validate_.on_unknown_item == "drop"
    assert cfg.validate_.on_unknown_user == "error"
    assert cfg.validate_.on_duplicate_id == "first"
    assert cfg.to_dict()["validate"]["on_duplicate_id"] == "first"


def test_toml_file(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[ingest]\nmemory_limit = "2GB"\n')
    assert load_config(path).ingest.memory_limit == "2GB"


def test_values_parse_as_json() -> None:
    cfg = load_config(overrides=["ingest.max_object_mb=64",
                                 "validate.empty_string_is_missing=false"])
    assert cfg.ingest.max_object_mb == 64 and cfg.validate_.empty_string_is_missing is False


@pytest.mark.parametrize("override,message", [
    ("validat.on_unknown_item=drop", "did you mean 'validate'"),
    ("validate.on_unknwn_item=drop", "did you mean 'on_unknown_item'"),
    ("validate.on_unknown_item=maybe", "'error' or 'drop'"),
    ("ingest.max_object_mb=-1", "greater than or equal to 0"),
    ("validate=3", "is a section"),
    ("novalue", "expected section.key=value"),
])
def test_bad_overrides(override, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(overrides=[override])


def test_hash_changes_with_the_config() -> None:
    assert load_config().hash() == Config().hash()
    assert load_config(overrides=["validate.on_unknown_item=drop"]).hash() != Config().hash()


def test_cli_rejects_unknown_keys_with_a_suggestion(tmp_path, doc) -> None:
    result = invoke("featurize", write_doc(tmp_path / "d.json", doc), "--store",
                    tmp_path / "s", "--set", "validate.on_unknown_iten=drop")
    assert result.exit_code == 1
    assert "unknown config key 'validate.on_unknown_iten'" in result.stderr
    assert "did you mean 'on_unknown_item'" in result.stderr
    missing = invoke("featurize", tmp_path / "d.json", "--config", tmp_path / "none.json")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr
