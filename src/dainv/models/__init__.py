"""The one registry of networks that speak the tap protocol (:class:`TappedModel`), and the one
importer of a user's ``module.path:factory``. Add a model with :func:`register_model`."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dainv.errors import DainvError
from dainv.models.allcnnc import AllCNNC, AllCNNImageNet
from dainv.models.base import TapMixin, TappedModel
from dainv.models.densenet import DenseNetBC
from dainv.models.tapped import TapError, Tapped, default_layers, tapped
from dainv.models.wrn import WideResNet

__all__ = [
    "AllCNNC", "AllCNNImageNet", "DenseNetBC", "WideResNet", "MODELS", "TapMixin", "Tapped", "TapError",
    "TappedModel", "build_model", "check_model_name", "default_layers", "model_names", "probe",
    "register_model", "resolve_layers", "tapped",
]  # fmt: skip


@dataclass(frozen=True)
class _Pattern:
    name: str  # e.g. "wrn-D-K"
    regex: re.Pattern
    builder: Callable[..., nn.Module]
    example: str
    convert: Callable[[dict[str, str]], dict]


#: Exact names → constructor ``builder(num_classes=, in_channels=, **kwargs)``.
MODELS: dict[str, Callable[..., nn.Module]] = {}
_PATTERNS: dict[str, _Pattern] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module] | None = None,
    *,
    pattern: str | None = None,
    example: str | None = None,
    convert: Callable[[dict[str, str]], dict] | None = None,
):
    """Register ``builder(num_classes=N, in_channels=C, **kwargs)`` under ``name`` (no builder: a decorator). A
    family: ``pattern``'s named groups become keyword arguments via ``convert`` (default ``int``)."""
    if pattern is None and not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(
            f"register_model: {name!r} is not a plain name (letters, digits, '_', '.', '-'); for a "
            "family of names give a display name and pattern=, e.g. register_model('my-net-N', "
            "pattern=r'my-net-(?P<depth>\\d+)', example='my-net-3')"
        )

    def add(b: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if pattern is None:
            MODELS[name] = b
        else:
            conv = convert or (lambda g: {k: int(v) for k, v in g.items()})
            _PATTERNS[name] = _Pattern(name, re.compile(pattern), b, example or name, conv)
        return b

    return add if builder is None else add(builder)


register_model("allcnnc", AllCNNC)
register_model("allcnn-imagenet", AllCNNImageNet)
register_model("wrn-D-K", WideResNet, pattern=r"wrn-(?P<depth>\d+)-(?P<widen>\d+)", example="wrn-28-10")
register_model(
    "densenet-bc-L-k", DenseNetBC, pattern=r"densenet-bc-(?P<depth>\d+)-(?P<growth>\d+)", example="densenet-bc-100-12"
)


def model_names() -> list[str]:
    """Registry names and patterns (``"wrn-D-K (e.g. wrn-28-10)"``), for help texts and messages."""
    out = sorted(MODELS)
    out += [f"{p.name} (e.g. {p.example})" for p in _PATTERNS.values()]
    return out + ["module.path:factory"]


def _lookup(name: str) -> tuple[Callable[..., nn.Module], dict]:
    if name in MODELS:
        return MODELS[name], {}
    for p in _PATTERNS.values():
        if m := p.regex.fullmatch(name):
            return p.builder, p.convert(m.groupdict())
    raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")


def check_model_name(name: str) -> None:
    """ValueError (listing the names) unless ``name`` is registered or an importable factory."""
    if ":" in name:
        _factory(name)
    else:
        _lookup(name)


def _user_code_error(e: BaseException, doing: str) -> ValueError:
    """A one-line ``ValueError`` for an exception of a user's code: its file and line (the
    innermost frame outside dainv, torch and the standard library), type and first line."""
    paths = sysconfig.get_paths()
    libs = [Path(__file__).resolve().parents[1], Path(torch.__file__).resolve().parent]
    libs += [Path(paths[k]).resolve() for k in ("stdlib", "platstdlib") if k in paths]
    prefixes = tuple(str(d) + os.sep for d in libs)
    frames = traceback.extract_tb(e.__traceback__)
    own = [f for f in frames if not f.filename.startswith("<") and not os.path.realpath(f.filename).startswith(prefixes)]
    frame = (own or frames or [None])[-1]
    where = f" at {frame.filename}, line {frame.lineno}" if frame is not None else ""
    text = str(e).strip().splitlines()
    return ValueError(f"{doing} failed{where}: {type(e).__name__}" + (f": {text[0]}" if text else ""))


def _import(mod_name: str):
    """``importlib.import_module``, falling back to the current folder as ``python -m`` puts
    it on ``sys.path`` (the ``dainv`` command does not): ``--model mynets:f`` beside mynets.py."""
    try:
        return importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        cwd = os.getcwd()
        if e.name != mod_name.split(".")[0] or cwd in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, cwd)
        importlib.invalidate_caches()
        try:
            return importlib.import_module(mod_name)
        except ModuleNotFoundError as e2:
            if e2.name == mod_name.split(".")[0]:
                sys.path.remove(cwd)
            raise


def _factory(spec: str) -> Callable[..., nn.Module]:
    """The one importer of ``module.path:factory`` (configs, checkpoints, ``--model``)."""
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"model {spec!r}: a factory is named 'module.path:function'")
    try:
        mod = _import(mod_name)
    except ImportError as e:
        raise ValueError(
            f"model {spec!r}: cannot import module {mod_name!r} ({e}); it is looked for on "
            "sys.path and in the current folder (or set PYTHONPATH)"
        ) from None
    except DainvError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed while it was imported
        raise _user_code_error(e, f"model {spec!r}: importing {mod_name!r}") from e
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {spec!r}: {attr!r} is not callable")
    return obj


def _call(name: str, fn: Callable[..., nn.Module], kwargs: dict, *, in_channels: int, user: bool) -> nn.Module:
    """``fn(**kwargs)`` (``in_channels`` to a user's factory only if it takes it); unknown options
    and a user's exception are a ``ValueError`` (the accepted options; its file and line)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if not user or (sig is not None and "in_channels" in sig.parameters):
        kwargs["in_channels"] = in_channels
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            params = sig.parameters
            unknown = [k for k in kwargs if k not in params] or sorted(kwargs)
            accepted = [p for p in params if p not in ("self", "num_classes", "in_channels")]
            raise ValueError(
                f"model {name!r}: unknown or missing option(s) {unknown} ({e}); its options are "
                f"{accepted} (model.kwargs, or --model-kwargs for dainv evaluate)"
            ) from None
    try:
        return fn(**kwargs)
    except DainvError:
        raise
    except Exception as e:
        if user:
            raise _user_code_error(e, f"model {name!r}: the factory") from e
        if isinstance(e, (TypeError, ValueError)):  # a registered model's own check, e.g. width > 0
            options = {k: v for k, v in kwargs.items() if k not in ("num_classes", "in_channels")}
            raise ValueError(f"model {name!r} with {options}: {e}") from None
        raise


def build_model(
    name: str | Callable[..., nn.Module],
    num_classes: int,
    in_channels: int = 3,
    layers: Sequence[str] | str | None = None,
    *,
    shapes_only: bool = False,
    **kwargs,
) -> nn.Module:
    """A :class:`TappedModel` by name (:func:`model_names`) or factory. ``layers``: what to tap in a
    plain module (wrapped with :func:`tapped`), else checked against ``tap_names``. ``shapes_only``:
    on the meta device (a factory that reads values, e.g. ``.item()``, on the CPU).

    >>> net = build_model("wrn-10-1", 10)
    >>> net.tap_names[:3]
    ('input', 'block1', 'block2')
    """
    if shapes_only:
        try:
            with torch.device("meta"):
                return build_model(name, num_classes, in_channels, layers, **kwargs)
        except (ValueError, RuntimeError, NotImplementedError):
            if not (callable(name) or ":" in name):
                raise
        return build_model(name, num_classes, in_channels, layers, **kwargs)  # e.g. .item()
    if callable(name) or ":" in name:
        fn = name if callable(name) else _factory(name)
        shown = name if isinstance(name, str) else getattr(name, "__qualname__", repr(name))
        model = _call(shown, fn, dict(kwargs, num_classes=num_classes), in_channels=in_channels, user=True)
        if not isinstance(model, nn.Module):
            raise ValueError(
                f"model {shown!r}: the factory returned {type(model).__name__}, not an nn.Module; "
                "return the network (a torch.nn.Module)"
            )
        if not isinstance(model, TappedModel):
            try:
                model = tapped(model, "auto" if layers is None else layers)
            except ValueError as e:
                raise ValueError(f"model {shown!r}: {e}") from None
    else:
        builder, extra = _lookup(name)
        kw = dict(kwargs, **extra, num_classes=num_classes)
        model = _call(name, builder, kw, in_channels=in_channels, user=False)
    if layers is not None and layers != "auto":
        model.check_taps([layers] if isinstance(layers, str) else list(layers))
    return model


@torch.no_grad()
def probe(model: nn.Module, x: torch.Tensor, num_classes: int, taps: Sequence[str] | None = None,
          name: str = "the model") -> None:  # fmt: skip
    """One eval-mode forward pass on a few images, before any work: ``ValueError`` unless the logits are
    ``(len(x), num_classes)`` (or it fails: the user's file and line); :class:`TapError` unless taps are per image."""
    was = model.training
    model.eval()
    try:
        out = model(x, taps=list(taps)) if taps else model(x)
    except DainvError:
        raise
    except Exception as e:
        shape = "x".join(str(d) for d in x.shape[1:])
        raise _user_code_error(e, f"{name} on {len(x)} images of {shape}") from e
    finally:
        model.train(was)
    if taps and not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
        raise ValueError(f"{name} does not return (logits, {{layer: activation}}) when asked for taps")
    logits, acts = out if taps else (out, {})
    want = (len(x), num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"{name} returns {got} for {len(x)} images, not {want} logits: the data set has "
            f"{num_classes} classes; build it for them (a factory gets num_classes={num_classes})"
        )
    for tap, a in acts.items():
        if not isinstance(a, torch.Tensor) or a.shape[:1] != x.shape[:1]:
            got = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
            raise TapError(
                f"tap {tap!r} of {name} gives {got} for {len(x)} images, not one "
                "activation per image (batch first); name other layers (train.layers, or "
                "--layers for dainv evaluate)"
            )


def resolve_layers(model: nn.Module, layers: Sequence[str] | str | None = "auto") -> list[str]:
    """The layers to tap in layer order (inside DDP/compile too): all but ``"input"`` for ``"auto"``."""
    net = model
    for attr in ("_orig_mod", "module"):  # torch.compile, DDP
        while not hasattr(net, "tap_names") and hasattr(net, attr):
            net = getattr(net, attr)
    if not hasattr(net, "tap_names"):
        raise ValueError(
            f"{type(net).__name__} has no tap_names; wrap it with dainv.models.tapped(module, layers)"
        )
    if layers is None or layers == "auto":
        return [n for n in net.tap_names if n != "input"]
    return list(net.check_taps([layers] if isinstance(layers, str) else list(layers)))
