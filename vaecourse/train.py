"""The training core: seeds, device, quick mode and one small fit loop.

``fit`` is a plain PyTorch loop. The chapter supplies the model and a ``loss_fn`` that
returns a dict of named loss terms; ``fit`` minimises ``terms["loss"]``, shows every term
live in a progress bar and keeps a per-epoch history for plots.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
from tqdm.auto import tqdm

from vaecourse.data import batches

QUICK_ENV = "VAECOURSE_QUICK"
QUICK_BATCHES = 20  # batches per epoch in quick mode: enough to prove the code runs


def quick_mode() -> bool:
    """True when ``$VAECOURSE_QUICK`` is set (CI sets it): train one short epoch, not many."""
    return os.environ.get(QUICK_ENV, "").strip().lower() not in ("", "0", "false", "no")


def pick_device() -> torch.device:
    """CUDA if present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a torch generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fast_dtype() -> torch.dtype:
    """bfloat16 if this CPU multiplies it natively (AVX-512 BF16 or AMX), else float32:
    without those instructions bfloat16 is emulated and slower than float32."""
    if (
        torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float32


@contextmanager
def threads(n: int):
    """Run the with-block with ``n`` PyTorch threads, then restore the previous number.
    Results can depend on the number of threads (sums are split differently), so a
    training that must be reproducible fixes it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


LossFn = Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], dict[str, torch.Tensor]]


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    train_data: tuple[torch.Tensor, ...],
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    schedule_every: str = "epoch",
    val_data: tuple[torch.Tensor, ...] | None = None,
    seed: int = 0,
    desc: str = "training",
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` by minimising ``loss_fn(model, batch)["loss"]`` with Adam (or
    ``optimizer``); return one dict per epoch with the mean of every term, ``val_`` terms
    when ``val_data`` is given, and the epoch's wall time in ``seconds``.

    ``train_data`` is a tuple of tensors sliced together into batches (for example
    ``(images,)`` or ``(images, labels)``); batches are moved to the model's device.
    ``scheduler`` steps once per epoch, or once per batch with
    ``schedule_every="batch"`` (warm-up and cosine schedules such as OneCycleLR).
    In quick mode it runs one epoch of at most ``QUICK_BATCHES`` batches.
    """
    if schedule_every not in ("epoch", "batch"):
        raise ValueError(
            f'schedule_every must be "epoch" or "batch", got {schedule_every!r}'
        )
    device = next(model.parameters()).device
    # fused: one kernel for the whole update, several times faster than the default
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    quick = quick_mode()
    epochs = min(epochs, 1) if quick else epochs
    n_batches = -(-len(train_data[0]) // batch_size)
    if quick:
        n_batches = min(n_batches, QUICK_BATCHES)
    history = []
    # In the built book a bar would be frozen mid-way; there, one printed line per epoch.
    lines = progress and os.environ.get("VAECOURSE_PROGRESS") == "lines"
    bar = tqdm(
        total=epochs * n_batches, desc=desc, disable=not progress or lines, leave=True
    )
    for epoch in range(1, epochs + 1):
        model.train()
        start = time.perf_counter()
        sums: dict[str, float] = {}
        seen = 0
        for i, batch in enumerate(
            batches(
                *train_data, batch_size=batch_size, shuffle=True, generator=generator
            )
        ):
            if i == n_batches:
                break
            batch = tuple(t.to(device) for t in batch)
            terms = loss_fn(model, batch)
            # stop before a NaN (or an infinity) reaches the weights
            if not torch.isfinite(terms["loss"]):
                raise FloatingPointError(
                    f"{desc}: the loss is {float(terms['loss'])} at epoch {epoch}, batch "
                    f"{i + 1}; training stopped and nothing was cached. A smaller "
                    "learning rate usually cures this."
                )
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            if scheduler is not None and schedule_every == "batch":
                scheduler.step()
            n = len(batch[0])
            seen += n
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
            bar.update(1)
            if i % 10 == 0 or i == n_batches - 1:
                bar.set_postfix(
                    {k: f"{v / seen:.4g}" for k, v in sums.items()}, refresh=False
                )
        if scheduler is not None and schedule_every == "epoch":
            scheduler.step()
        row = {"epoch": epoch, **{k: v / seen for k, v in sums.items()}}
        # images seen, with ``seconds``: the training throughput the bench reports
        row["images"] = seen
        if val_data is not None:
            val = evaluate(model, loss_fn, val_data, batch_size=1024)
            row.update({f"val_{k}": v for k, v in val.items()})
        row["seconds"] = time.perf_counter() - start
        history.append(row)
        if lines:
            terms = ", ".join(
                f"{k} {v:.4g}"
                for k, v in row.items()
                if k not in ("epoch", "seconds", "images")
            )
            print(
                f"{desc}: epoch {epoch}/{epochs}: {terms} ({row['seconds']:.1f} s)",
                flush=True,
            )
        bar.set_postfix(
            {k: f"{v:.4g}" for k, v in row.items() if k not in ("epoch", "images")}
        )
    bar.close()
    model.eval()
    return history


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, ...],
    batch_size: int = 1024,
) -> dict[str, float]:
    """Mean of every loss term over ``data`` (weighted by batch size), in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    for batch in batches(*data, batch_size=batch_size):
        batch = tuple(t.to(device) for t in batch)
        for name, value in loss_fn(model, batch).items():
            sums[name] = sums.get(name, 0.0) + float(value) * len(batch[0])
    model.train(was_training)
    return {k: v / len(data[0]) for k, v in sums.items()}
