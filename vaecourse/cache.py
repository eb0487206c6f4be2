"""The checkpoint cache: train a model once, load it in seconds afterwards.

An entry is keyed by everything that decides the trained weights: the model's name, its
training configuration, its architecture (``repr(model)``), the data, the package version
and quick mode. A file holds a magic string, the SHA-256 of its payload and the payload
(``torch.save`` of weights, history and metadata). It is written atomically (temporary
file + rename) and read with ``torch.load(weights_only=True)``; a truncated, corrupted or
mismatched entry is reported, deleted and retrained, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from vaecourse import __version__
from vaecourse.data import DATA_FINGERPRINT, _write_atomic, data_dir
from vaecourse.train import quick_mode

MAGIC = b"VAECOURSE-CKPT-1\n"


@dataclass
class Trained:
    """What ``train_cached`` returns: the training history and where the weights came from."""

    history: list[dict]
    train_seconds: float  # wall time of the original training run
    from_cache: bool
    path: Path


# Every entry used in this process, for a chapter's cold-run time (see vaecourse.book).
USED: list[Trained] = []


def checkpoint_dir() -> Path:
    """``$VAECOURSE_CHECKPOINTS``, or ``checkpoints/`` next to the MNIST cache."""
    if os.environ.get("VAECOURSE_CHECKPOINTS"):
        return Path(os.environ["VAECOURSE_CHECKPOINTS"]).expanduser()
    return data_dir().parent / "checkpoints"


def key_material(name: str, model: torch.nn.Module, config: dict) -> dict:
    """Everything the weights depend on; its hash names the file."""
    return {
        "name": name,
        "config": config,
        "architecture": repr(model),
        "data": DATA_FINGERPRINT,
        "vaecourse": __version__,
        "quick": quick_mode(),
    }


def entry_path(name: str, model: torch.nn.Module, config: dict) -> Path:
    material = json.dumps(
        key_material(name, model, config), sort_keys=True, default=str
    )
    digest = hashlib.sha256(material.encode()).hexdigest()[:20]
    return checkpoint_dir() / f"{name}-{digest}.pt"


def save_entry(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    _write_atomic(
        path, MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    )


def load_entry(path: Path) -> dict:
    """The payload of a cache file. Raises ValueError (bad header or checksum) or
    pickle.UnpicklingError (content that ``weights_only`` loading refuses)."""
    blob = path.read_bytes()
    head = len(MAGIC) + 65
    if not blob.startswith(MAGIC) or len(blob) < head:
        raise ValueError("not a vaecourse checkpoint (wrong header or truncated)")
    digest, body = blob[len(MAGIC) : head - 1].decode(), blob[head:]
    if hashlib.sha256(body).hexdigest() != digest:
        raise ValueError("checksum mismatch: the file is truncated or corrupted")
    return torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")


def check_fits(model: torch.nn.Module, state: dict) -> None:
    """Raise ValueError unless ``state`` has exactly the model's tensors and shapes."""
    own = model.state_dict()
    if set(own) != set(state):
        raise ValueError(
            f"its tensors differ from the model's: {sorted(set(own) ^ set(state))}"
        )
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        raise ValueError(f"tensor shapes differ from the model's: {wrong}")


def train_cached(
    name: str,
    model: torch.nn.Module,
    train: Callable[[torch.nn.Module], list[dict]],
    config: dict,
) -> Trained:
    """Load ``model``'s weights from the cache, or train it with ``train(model)`` (which
    returns the history) and store the result. ``config`` must name every setting that
    changes the result (hyperparameters, epochs, seed, ...): it is part of the key.
    """
    path = entry_path(name, model, config)
    material = json.loads(json.dumps(key_material(name, model, config), default=str))
    if path.exists():
        try:
            payload = load_entry(path)
            if payload["key"] != material:
                raise ValueError("it was written for another configuration")
            check_fits(model, payload["state_dict"])  # so nothing is loaded half-way
            model.load_state_dict(payload["state_dict"])
            model.eval()
            result = Trained(payload["history"], payload["train_seconds"], True, path)
            USED.append(result)
            return result
        except Exception as e:
            warnings.warn(
                f"checkpoint {path} is unusable ({e}); retraining", stacklevel=2
            )
            path.unlink(missing_ok=True)
    start = time.perf_counter()
    # plain floats and ints only: weights_only loading would refuse NumPy scalars
    history = json.loads(json.dumps(train(model), default=float))
    seconds = time.perf_counter() - start
    model.eval()
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "key": material,
        "state_dict": state,
        "history": history,
        "train_seconds": seconds,
    }
    save_entry(path, payload)
    result = Trained(history, seconds, False, path)
    USED.append(result)
    return result
