"""The training core: seeds, quick mode, threads, mixed precision and one small
fit loop.

``fit`` is a plain PyTorch loop. The chapter supplies the model and a
``loss_fn`` that returns a dict of named loss terms; ``fit`` minimises
``terms["loss"]`` with Adam, owns the learning-rate schedule, shows every term
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
QUICK_BATCHES = (
    20  # training steps in quick mode: enough to prove the code runs
)


def quick_mode() -> bool:
    """True when ``$VAECOURSE_QUICK`` is set (CI sets it): train one short
    epoch, not many."""
    return os.environ.get(QUICK_ENV, "").strip().lower() not in (
        "",
        "0",
        "false",
        "no",
    )


def quick_steps(steps: int) -> int:
    """``steps``, or at most ``QUICK_BATCHES`` of them in quick mode."""
    return min(steps, QUICK_BATCHES) if quick_mode() else steps


def total_steps(n: int, batch_size: int, epochs: int) -> int:
    """How many optimizer steps ``fit`` takes on ``n`` items: ``epochs`` passes
    of ceil(n / batch_size) batches, or one short epoch in quick mode."""
    per_epoch = -(-n // batch_size)
    return quick_steps(per_epoch) if quick_mode() else epochs * per_epoch


DEVICE_ENV = "VAECOURSE_DEVICE"


def pick_device() -> torch.device:
    """Where the chapter's models train and run: ``$VAECOURSE_DEVICE`` if set
    (``cpu`` keeps a GPU machine on the CPU), else CUDA or Apple's MPS when
    present, else the CPU."""
    asked = os.environ.get(DEVICE_ENV, "").strip()
    if asked:
        try:
            device = torch.device(asked)
        except RuntimeError as e:
            raise ValueError(
                f"${DEVICE_ENV}={asked!r} is not a torch device ({e}); use "
                "cpu, cuda or mps, or unset it"
            ) from None
        available = {
            "cpu": True,
            "cuda": torch.cuda.is_available(),
            "mps": torch.backends.mps.is_available(),
        }.get(device.type, False)
        if not available:
            raise ValueError(
                f"${DEVICE_ENV}={asked!r}: this machine has no {device.type} "
                "device; unset it to let pick_device choose"
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; return a torch generator seeded the same
    way."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def fast_dtype() -> torch.dtype:
    """bfloat16 if this CPU multiplies it natively (AVX-512 BF16 or AMX), else
    float32: without those instructions bfloat16 is emulated and slower than
    float32."""
    if (
        torch.backends.mkldnn.is_available()
        and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    ):
        return torch.bfloat16
    return torch.float32


@contextmanager
def threads(n: int):
    """Run the with-block with ``n`` PyTorch threads, then restore the previous
    number. Results can depend on the number of threads (sums are split
    differently), so a training that must be reproducible fixes it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


LossFn = Callable[
    [torch.nn.Module, tuple[torch.Tensor, ...]], dict[str, torch.Tensor]
]


def fit(
    model: torch.nn.Module,
    loss_fn: LossFn,
    train_data: tuple[torch.Tensor, ...],
    *,
    epochs: int | None,
    batch_size: int = 128,
    lr: float = 1e-3,
    warmup: float | None = None,
    time_limit: float | None = None,
    val_data: tuple[torch.Tensor, ...] | None = None,
    seed: int = 0,
    desc: str = "training",
    progress: bool = True,
) -> list[dict[str, float]]:
    """Train ``model`` by minimising ``loss_fn(model, batch)["loss"]`` with
    Adam; return one dict per epoch with the mean of every term, ``val_`` terms
    when ``val_data`` is given, the images seen, the learning rate at the
    epoch's end and the epoch's wall time in ``seconds``.

    ``train_data`` is a tuple of tensors sliced together into shuffled batches
    (for example ``(images,)`` or ``(images, labels)``).

    - Learning rate: constant, or with ``warmup`` = f the one-cycle schedule:
      it rises to ``lr`` over the first fraction f of the steps, then decays
      along a cosine to almost 0 at the last step (PyTorch's OneCycleLR,
      stepped after every batch).
    - ``time_limit``: stop once training has run that many seconds (``epochs``
      may then be None: as many as fit in the time).
    - Quick mode: one epoch of at most ``QUICK_BATCHES`` batches, the schedule
      fitted to them (with at least two warm-up steps).
    """
    if epochs is None and time_limit is None:
        raise ValueError("fit needs epochs, a time_limit, or both")
    if warmup is not None and (epochs is None or not 0 < warmup < 1):
        raise ValueError(
            f"warmup is a fraction of the steps in (0, 1) and needs epochs, got {warmup}"
        )
    n_batches = -(-len(train_data[0]) // batch_size)
    if quick_mode():
        epochs, n_batches = 1, quick_steps(n_batches)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    scheduler = None
    steps = (
        total_steps(len(train_data[0]), batch_size, epochs) if epochs else 0
    )
    if warmup is not None and steps > 2:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=lr,
            total_steps=steps,
            # at least two warm-up steps: a short (quick) run still has both
            # phases
            pct_start=max(warmup, 2 / steps),
            cycle_momentum=False,
        )
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    history = []
    # In the built book a bar would be frozen mid-way; there, one printed line
    # per epoch.
    lines = progress and os.environ.get("VAECOURSE_PROGRESS") == "lines"
    bar = tqdm(
        total=epochs * n_batches if epochs else None,
        desc=desc,
        disable=not progress or lines,
        leave=True,
    )
    start_all = time.perf_counter()
    out_of_time = False
    epoch = 0
    while not out_of_time and (epochs is None or epoch < epochs):
        epoch += 1
        model.train()
        start = time.perf_counter()
        sums: dict[str, float] = {}
        seen = 0
        for i, batch in enumerate(
            batches(
                *train_data,
                batch_size=batch_size,
                shuffle=True,
                generator=generator,
            )
        ):
            if i == n_batches:
                break
            batch = tuple(t.to(device) for t in batch)
            terms = loss_fn(model, batch)
            # stop before a NaN (or an infinity) reaches the weights
            if not torch.isfinite(terms["loss"]):
                raise FloatingPointError(
                    f"{desc}: the loss is {float(terms['loss'].detach())} at "
                    f"epoch {epoch}, batch {i + 1}; training stopped and nothing "
                    "was cached. A smaller learning rate usually cures this."
                )
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            n = len(batch[0])
            seen += n
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach()) * n
            bar.update(1)
            if i % 10 == 0 or i == n_batches - 1:
                bar.set_postfix(
                    {k: f"{v / seen:.4g}" for k, v in sums.items()},
                    refresh=False,
                )
            if (
                time_limit is not None
                and time.perf_counter() - start_all > time_limit
            ):
                out_of_time = True
                break
        row = {"epoch": epoch, **{k: v / seen for k, v in sums.items()}}
        # images seen, with ``seconds``: the training throughput the bench
        # reports
        row["images"] = seen
        # after the epoch's last step
        row["lr"] = optimizer.param_groups[0]["lr"]
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
            of = f"/{epochs}" if epochs else ""
            print(
                f"{desc}: epoch {epoch}{of}: {terms} ({row['seconds']:.1f} s)",
                flush=True,
            )
        bar.set_postfix(
            {
                k: f"{v:.4g}"
                for k, v in row.items()
                if k not in ("epoch", "images")
            }
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
    """Mean of every loss term over ``data`` (weighted by batch size), in eval
    mode."""
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
