"""The op registry: built-in ops register here exactly as a plugin would."""

from __future__ import annotations

from unirec.registry import Registry

OPS: Registry[type] = Registry("op", entry_point_group="unirec.ops")
