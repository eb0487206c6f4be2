"""The checkpoint cache: train each of the book's models once, load it in
seconds after.

A model is described by a ``Recipe`` (``vaecourse.zoo`` holds the book's). Its
entry is keyed by everything that decides the trained weights:

- the recipe: the model's class and arguments, the training and data functions
  and their settings, the seed, the number of threads, the recipes of the
  models it needs (``needs``);
- the source of the code that runs: every vaecourse function and class the
  recipe reaches by name, followed through the functions it calls
  (``code_sources``), so that editing a training function retrains the models
  it trains;
- the data's checksum, torch's major.minor version, the CPU's fast dtype, quick
  mode, and the kind of device it trains on when that is not the CPU (weights
  trained on a GPU never stand in for the CPU ones the book shows).

A file holds a magic string, the SHA-256 of its payload and the payload
(``torch.save`` of the weights, history, training time and key), written
atomically and read with ``torch.load(weights_only=True)``; a truncated,
corrupted or mismatched entry is reported, deleted and retrained, never
trusted.

A chapter's costly evaluations of those models (a likelihood with 1,000
importance samples on 10,000 images) are stored the same way by ``remember``,
keyed by the function's code, the models' code and weights, and the other
arguments.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import io
import json
import os
import textwrap
import time
import warnings
from collections.abc import Callable, Mapping
from contextlib import nullcontext, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from vaecourse.data import DATA_FINGERPRINT, data_dir, write_atomic
from vaecourse.train import fast_dtype, pick_device, quick_mode, threads

MAGIC = b"VAECOURSE-CKPT-1\n"
PACKAGE = "vaecourse"


@dataclass(frozen=True)
class Recipe:
    """How one of the book's models is built and trained: all that decides its
    weights.

    Training runs ``train(model, **data(*needed), **settings)``, where
    ``needed`` are the trained models of ``needs`` (for example the VAE whose
    codes a latent DDPM models), after seeding torch with ``seed`` and building
    ``model()``.
    """

    name: str
    model: Callable[[], nn.Module]
    train: Callable[..., list[dict]]
    data: Callable[..., dict]
    settings: Mapping = field(default_factory=dict)
    needs: tuple[Recipe, ...] = ()
    threads: int | None = None
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(
            self, "settings", MappingProxyType(dict(self.settings))
        )
        # a clear error now, not when the model is first loaded
        describe(self.__dict__)

    def __str__(self) -> str:
        doc = inspect.getdoc(self.data) or self.data.__name__
        data = " ".join(doc.split())  # the whole docstring, on one line
        train = describe_call(functools.partial(self.train, **self.settings))
        run = [f"seed {self.seed}"]
        if self.threads:
            run.append(f"{self.threads} thread{'s' * (self.threads > 1)}")
        if self.needs:
            run.append(f"after {', '.join(n.name for n in self.needs)}")

        def wrap(text, indent):
            return textwrap.wrap(
                text,
                79,
                initial_indent="  ",
                subsequent_indent=" " * indent,
                break_long_words=False,
                break_on_hyphens=False,
            )

        return "\n".join(
            [
                f"{self.name}: {describe_call(self.model)}",
                *wrap(f"trained by {train}", 6),
                *wrap(f"on {data.rstrip('.')}; {', '.join(run)}", 4),
            ]
        )

    def digest(self) -> str:
        """SHA-256 of the recipe and the source of its code (the same on every
        machine)."""
        material = {
            "recipe": describe(self.__dict__ | {"needs": None}),
            "needs": {n.name: n.digest() for n in self.needs},
            "code": code_digest(
                self.model, self.train, self.data, self.settings
            ),
            "mnist": DATA_FINGERPRINT,
        }
        return _sha256(material)


@dataclass
class TrainingRecord:
    """What a loaded model carries as ``.record``: its training history and
    time. ``remember`` keeps one per stored evaluation too (no history, the
    time of its first computation)."""

    history: list[dict]
    train_seconds: float  # wall time of the original training run
    from_cache: bool
    path: Path


# Every entry (model or remembered result) used in this process, for a
# chapter's cold-run time (vaecourse.book).
USED: list[TrainingRecord] = []


def describe(value):
    """``value`` as plain JSON: classes and functions by their qualified name,
    partials as a call. Tensors, lambdas and local functions are refused: a
    recipe must name what it runs, so that the key can follow it and a reader
    can find it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): describe(v) for k, v in value.items()}
    if isinstance(value, Recipe):
        return value.name
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, functools.partial):
        return {
            "call": describe(value.func),
            "args": describe(value.args),
            "keywords": describe(value.keywords),
        }
    name = getattr(value, "__qualname__", None)
    if callable(value) and name and "<" not in name:
        return f"{value.__module__}.{name}"
    raise TypeError(
        "a recipe holds plain values, classes, module-level functions and "
        f"functools.partial of them; got {type(value).__name__} {value!r}"
    )


def describe_call(call) -> str:
    """A partial as the reader would write the call: ``VAE(32, (512, 256),
    SiLU)``."""
    if not isinstance(call, functools.partial):
        return f"{call.__name__}()"

    def show(v):
        if isinstance(v, functools.partial):
            return describe_call(v)
        return getattr(v, "__name__", None) or repr(v)

    args = [show(a) for a in call.args]
    args += [f"{k}={show(v)}" for k, v in call.keywords.items()]
    return f"{call.func.__name__}({', '.join(args)})"


def _ours(obj) -> bool:
    # a chapter's own functions (a notebook runs as __main__) are followed too
    module = getattr(obj, "__module__", None) or ""
    return module.split(".")[0] == PACKAGE or module == "__main__"


def _names(code) -> set[str]:
    """The global and attribute names a code object uses, nested functions
    included."""
    names = set(code.co_names)
    for const in code.co_consts:
        if inspect.iscode(const):
            names |= _names(const)
    return names


def code_sources(*roots) -> dict[str, str]:
    """The code (``code_text``) of every vaecourse function and class that
    ``roots`` reach: the roots themselves, the functions and classes their code
    names (also through a module, as ``data.load_mnist``), their defaults, and
    the plain constants they read.

    Calls through an object (``model.encode``) are covered by the object's
    class, which a recipe names. Code outside vaecourse (torch, numpy) is
    covered by torch's version.
    """
    sources: dict[str, str] = {}
    todo = list(roots)
    while todo:
        obj = todo.pop()
        if isinstance(obj, functools.partial):
            todo += [obj.func, *obj.args, *obj.keywords.values()]
            continue
        if isinstance(obj, list | tuple):
            todo += obj
            continue
        if isinstance(obj, Mapping):
            todo += obj.values()
            continue
        if isinstance(obj, staticmethod | classmethod):
            obj = obj.__func__
        if inspect.isfunction(obj):
            # the function under @torch.no_grad() and the like
            obj = inspect.unwrap(obj)
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not _ours(
            obj
        ):
            continue
        name = f"{obj.__module__}.{obj.__qualname__}"
        if name in sources:
            continue
        sources[name] = code_text(inspect.getsource(obj))
        if inspect.isclass(obj):
            todo += [*obj.__bases__, *vars(obj).values()]
            continue
        defaults = [
            *(obj.__defaults__ or ()),
            *(obj.__kwdefaults__ or {}).values(),
        ]
        # evaluated where the function is defined: not in its source
        if defaults:
            sources[f"{name} defaults"] = repr([_plain(d) for d in defaults])
            todo += defaults
        names = _names(obj.__code__)
        for used in names:
            value = obj.__globals__.get(used)
            if (
                inspect.ismodule(value)
                and value.__name__.split(".")[0] == PACKAGE
            ):
                todo += [getattr(value, n) for n in names if hasattr(value, n)]
            elif isinstance(value, bool | int | float | str):
                sources[f"{obj.__module__}.{used}"] = repr(value)
            else:
                todo.append(value)
    return sources


def code_text(source: str) -> str:
    """What of ``source`` the computation depends on: its syntax tree, without
    comments, docstrings or formatting, so that rewording a docstring or
    re-wrapping a line does not retrain a model."""
    tree = ast.parse(textwrap.dedent(source))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.ClassDef | ast.Module)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def _plain(value):
    try:
        return describe(value)
    # a tensor or another object: its type is what the source fixes
    except TypeError:
        return type(value).__name__


def code_digest(*roots) -> str:
    """SHA-256 of ``code_sources(*roots)``."""
    return _sha256(code_sources(*roots))


def environment() -> dict:
    """What of this machine decides trained weights besides the recipe. The
    device kind is keyed only off the CPU, so CPU entries keep their keys."""
    env = {
        "torch": ".".join(torch.__version__.split(".")[:2]),
        "fast_dtype": str(fast_dtype()),
        "quick": quick_mode(),
    }
    device = pick_device().type
    if device != "cpu":
        env["device"] = device
    return env


def _sha256(material) -> str:
    text = json.dumps(material, sort_keys=True, default=describe)
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_dir() -> Path:
    """``$VAECOURSE_CHECKPOINTS``, or ``checkpoints/`` next to the MNIST
    cache."""
    if os.environ.get("VAECOURSE_CHECKPOINTS"):
        return Path(os.environ["VAECOURSE_CHECKPOINTS"]).expanduser()
    return data_dir().parent / "checkpoints"


def cache_key(recipe: Recipe) -> dict:
    """The key of ``recipe``'s entry: its digest and this machine's
    environment."""
    return {"name": recipe.name, "recipe": recipe.digest(), **environment()}


def entry_path(recipe: Recipe) -> Path:
    return (
        checkpoint_dir()
        / f"{recipe.name}-{_sha256(cache_key(recipe))[:20]}.pt"
    )


def save_entry(path: Path, payload: dict) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    body = buffer.getvalue()
    write_atomic(
        path, MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body
    )


def load_entry(path: Path) -> dict:
    """The payload of a cache file. Raises ValueError (bad header or checksum)
    or pickle.UnpicklingError (content that ``weights_only`` loading refuses).
    """
    blob = path.read_bytes()
    head = len(MAGIC) + 65
    if not blob.startswith(MAGIC) or len(blob) < head:
        raise ValueError(
            "not a vaecourse checkpoint (wrong header or truncated)"
        )
    digest, body = blob[len(MAGIC) : head - 1].decode(), blob[head:]
    if hashlib.sha256(body).hexdigest() != digest:
        raise ValueError(
            "checksum mismatch: the file is truncated or corrupted"
        )
    return torch.load(io.BytesIO(body), weights_only=True, map_location="cpu")


def check_fits(model: nn.Module, state: dict) -> None:
    """Raise ValueError unless ``state`` has exactly the model's tensors and
    shapes."""
    own = model.state_dict()
    if set(own) != set(state):
        raise ValueError(
            f"its tensors differ from the model's: {sorted(set(own) ^ set(state))}"
        )
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        raise ValueError(f"tensor shapes differ from the model's: {wrong}")


def load(recipe: Recipe) -> nn.Module:
    """``recipe``'s trained model, in eval mode on ``pick_device()``, with its
    ``TrainingRecord`` as ``.record``: from the cache, or trained now (the
    models it needs first) and stored."""
    needed = [load(n) for n in recipe.needs]
    torch.manual_seed(recipe.seed)
    # built on the CPU, then moved: the same initial weights on every device
    model = recipe.model().to(pick_device())
    key = cache_key(recipe)
    path = entry_path(recipe)
    _log(recipe)
    if path.exists():
        try:
            payload = load_entry(path)
            if payload["key"] != key:
                raise ValueError(
                    "it was written for another recipe or machine"
                )
            # so nothing is loaded half-way
            check_fits(model, payload["state_dict"])
            model.load_state_dict(payload["state_dict"])
            return _done(
                model, payload["history"], payload["train_seconds"], True, path
            )
        except Exception as e:
            warnings.warn(
                f"checkpoint {path} is unusable ({e}); retraining",
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
    # In the built book (progress as plain lines) training prints nothing, so
    # a page shows the same whether its models were cached or trained for it.
    quiet = os.environ.get("VAECOURSE_PROGRESS") == "lines"
    start = time.perf_counter()
    with (
        threads(recipe.threads) if recipe.threads else nullcontext(),
        redirect_stdout(io.StringIO()) if quiet else nullcontext(),
    ):
        history = recipe.train(
            model, **recipe.data(*needed), **recipe.settings
        )
    seconds = time.perf_counter() - start
    # plain floats and ints only: weights_only loading would refuse NumPy
    # scalars
    history = json.loads(json.dumps(history, default=float))
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "key": key,
        "state_dict": state,
        "history": history,
        "train_seconds": seconds,
    }
    save_entry(path, payload)
    return _done(model, history, seconds, False, path)


def _done(model, history, seconds, from_cache, path) -> nn.Module:
    model.eval()
    model.record = TrainingRecord(history, seconds, from_cache, path)
    USED.append(model.record)
    return model


def _log(recipe: Recipe) -> None:
    # `make book` asks which models a chapter loads: a chapter is stale when
    # one changes
    log = os.environ.get("VAECOURSE_MODEL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(
                json.dumps({"name": recipe.name, "digest": recipe.digest()})
                + "\n"
            )


def remember(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, computed once and read from the cache after:
    for a chapter's costly, seeded evaluations of the zoo's models.

    The entry is keyed by ``fn``'s code (followed as a recipe's is), every
    argument (a model by its class's code and its weights, so that a
    retrained model is measured again; a tensor by its contents; a plain
    value as it is) and the machine's environment. ``fn`` must be
    deterministic given these (seed its draws): the stored result stands for
    a new run. It returns tensors, numbers, or lists and dicts of them.
    """
    material = {
        "fn": f"{fn.__module__}.{fn.__qualname__}",
        # fn itself even when it is not vaecourse's (a test's function)
        "code": [code_text(inspect.getsource(fn)), code_sources(fn)],
        "args": [_argument(a) for a in args],
        "kwargs": {k: _argument(v) for k, v in kwargs.items()},
        **environment(),
    }
    key = _sha256(material)
    path = checkpoint_dir() / "results" / f"{fn.__name__}-{key[:20]}.pt"
    if path.exists():
        try:
            payload = load_entry(path)
            if payload["key"] != key:
                raise ValueError("it was written for another computation")
            seconds = float(payload["seconds"])
            _remembered(seconds, True, path)
            return payload["result"]
        except Exception as e:
            warnings.warn(
                f"stored result {path} is unusable ({e}); recomputing",
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    seconds = time.perf_counter() - start
    save_entry(path, {"key": key, "result": result, "seconds": seconds})
    _remembered(seconds, False, path)
    return result


def _remembered(seconds, from_cache, path) -> None:
    # in USED like a model, so that a chapter's cold-run time counts the
    # evaluation's first computation (vaecourse.book)
    USED.append(TrainingRecord([], seconds, from_cache, path))


def _argument(value):
    """What of an argument of ``remember`` decides the result."""
    if isinstance(value, nn.Module):
        # its class's code (which methods fn calls) and its weights
        return {
            "model": code_sources(type(value)),
            "weights": _argument(value.state_dict()),
        }
    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        data = t.flatten().view(torch.uint8).numpy().tobytes()
        return {
            "tensor": hashlib.sha256(data).hexdigest(),
            "shape": list(t.shape),
            "dtype": str(t.dtype),
        }
    if isinstance(value, list | tuple):
        return [_argument(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _argument(v) for k, v in value.items()}
    return describe(value)
