"""The one Registry class: register, get with did-you-mean, names, entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from unirec.errors import UnknownComponentError
from unirec.registry import Registry


def test_register_get_and_names() -> None:
    reg: Registry[type] = Registry("loss")

    @reg.register("softmax")
    class Softmax:
        pass

    reg.register("bpr", int)
    assert reg.get("softmax") is Softmax
    assert reg.names() == ["bpr", "softmax"] and "bpr" in reg


def test_unknown_name_suggests_the_closest() -> None:
    reg: Registry[int] = Registry("loss")
    reg.register("softmax", 1)
    with pytest.raises(UnknownComponentError, match=r"unknown loss 'sofmax' \(did you mean "
                                                    r"'softmax'\?\); known: softmax"):
        reg.get("sofmax")


def test_double_registration_needs_replace() -> None:
    reg: Registry[int] = Registry("encoder")
    reg.register("x", 1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("x", 2)
    reg.register("x", 2, replace=True)
    assert reg.get("x") == 2


def test_entry_points_are_discovered(monkeypatch) -> None:
    ep = EntryPoint(name="plugin", value="collections:OrderedDict", group="unirec.test")
    monkeypatch.setattr("unirec.registry.entry_points",
                        lambda group: [ep] if group == "unirec.test" else [])
    reg: Registry[type] = Registry("encoder", entry_point_group="unirec.test")
    from collections import OrderedDict

    assert reg.get("plugin") is OrderedDict
    assert reg.names() == ["plugin"]
