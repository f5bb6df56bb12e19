"""Networks whose intermediate activations can be tapped for the DAI loss and invariance score.

Every model speaks one protocol (:class:`TappedModel`): ``net.tap_names`` (its layers in
order, possibly starting with ``"input"``) and ``net(x, taps=[names]) -> (logits, {name:
activation})``. One registry serves the CLI, configs, checkpoints and the Python API:

* ``allcnnc`` (``width``) — All-CNN-C of the paper;
* ``wrn-D-K`` — wide residual network, e.g. ``wrn-28-10`` (36.5 M parameters), ``wrn-10-1``;
* ``densenet-bc-L-k`` — DenseNet-BC, e.g. ``densenet-bc-100-12`` (0.77 M), ``densenet-bc-40-12``;
* ``allcnn-imagenet`` (``width``) — Springenberg's ImageNet All-CNN for 64×64 images;
* ``module.path:factory`` — your own network, ``factory(num_classes=N, **kwargs)``; a plain
  module (without the protocol) is wrapped with :func:`tapped` on the ``layers`` you name.

Add a model with :func:`register_model` (docs/architecture.md).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn

from dainv.models.allcnn_imagenet import AllCNNImageNet
from dainv.models.allcnnc import AllCNNC
from dainv.models.base import TapMixin, TappedModel
from dainv.models.densenet import DenseNetBC
from dainv.models.tapped import Tapped, tapped
from dainv.models.wrn import WideResNet

__all__ = [
    "AllCNNC",
    "AllCNNImageNet",
    "DenseNetBC",
    "WideResNet",
    "MODELS",
    "TapMixin",
    "Tapped",
    "TappedModel",
    "build_model",
    "check_model_name",
    "model_names",
    "register_model",
    "resolve_layers",
    "tapped",
]


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
    """Register a model under ``name``; usable as a decorator or a function.

    Args:
        name: the registry name (``"allcnnc"``), or, with ``pattern``, the family's display
            name (``"wrn-D-K"``).
        builder: a callable ``builder(num_classes=N, in_channels=C, **kwargs)`` returning a
            module with the tap protocol. Omit it to use ``register_model`` as a decorator.
        pattern: a regular expression with named groups matched against the full model name;
            the groups (through ``convert``, default ``int``) become keyword arguments.
        example: an instance of the pattern for help texts (e.g. ``"wrn-28-10"``).
        convert: maps the regex groups to keyword arguments.

    Returns:
        The builder (so the decorator form leaves the class or function unchanged).
    """

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
register_model(
    "wrn-D-K", WideResNet, pattern=r"wrn-(?P<depth>\d+)-(?P<widen>\d+)", example="wrn-28-10"
)
register_model(
    "densenet-bc-L-k",
    DenseNetBC,
    pattern=r"densenet-bc-(?P<depth>\d+)-(?P<growth>\d+)",
    example="densenet-bc-100-12",
)


def model_names() -> list[str]:
    """Registry names and patterns, for help texts and error messages.

    Returns:
        e.g. ``["allcnn-imagenet", "allcnnc", "wrn-D-K (e.g. wrn-28-10)", ...,
        "module.path:factory"]``.
    """
    out = sorted(MODELS)
    out += [f"{p.name} (e.g. {p.example})" for p in _PATTERNS.values()]
    return out + ["module.path:factory"]


def _lookup(name: str) -> tuple[Callable[..., nn.Module], dict]:
    if name in MODELS:
        return MODELS[name], {}
    for p in _PATTERNS.values():
        m = p.regex.fullmatch(name)
        if m:
            return p.builder, p.convert(m.groupdict())
    raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")


def check_model_name(name: str) -> None:
    """Raise ValueError (listing the names) unless ``name`` is registered, matches a pattern,
    or is an importable ``module.path:factory``."""
    if ":" in name:
        _factory(name)
    else:
        _lookup(name)


def _factory(spec: str) -> Callable[..., nn.Module]:
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ValueError(f"model {spec!r}: a factory is named 'module.path:function'")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"model {spec!r}: cannot import module {mod_name!r} ({e})") from None
    obj = mod
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"model {spec!r}: module {mod_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"model {spec!r}: {attr!r} is not callable")
    return obj


def _call(name: str, fn: Callable[..., nn.Module], kwargs: dict) -> nn.Module:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            sig.bind(**kwargs)
        except TypeError as e:
            accepted = [p for p in sig.parameters if p not in ("self",)]
            raise ValueError(
                f"model {name!r}: bad options {sorted(kwargs)} ({e}); it accepts {accepted}"
            ) from None
    return fn(**kwargs)


def build_model(
    name: str,
    num_classes: int,
    in_channels: int = 3,
    layers: Sequence[str] | str | None = None,
    **kwargs,
) -> nn.Module:
    """A network by registry name or ``module.path:factory``, speaking the tap protocol.

    Args:
        name: ``allcnnc``, ``allcnn-imagenet``, ``wrn-D-K``, ``densenet-bc-L-k`` or
            ``module.path:factory`` (see :func:`model_names`).
        num_classes: number of logits.
        in_channels: image channels (passed to a factory only if it accepts ``in_channels``).
        layers: only for a factory returning a plain module: the submodule names to tap
            (it is then wrapped with :func:`tapped`). ``None``/``"auto"`` is an error there;
            for a protocol model they are checked against its ``tap_names``.
        **kwargs: the constructor's options (e.g. ``width`` for ``allcnnc``).

    Returns:
        The model (a :class:`TappedModel`).

    Raises:
        ValueError: unknown name, bad options, or a plain module without ``layers``.

    Example:
        >>> net = build_model("wrn-10-1", 10)
        >>> net.tap_names[:3]
        ('input', 'block1', 'block2')
    """
    if ":" in name:
        fn = _factory(name)
        args = dict(kwargs, num_classes=num_classes)
        try:
            params = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            params = {}
        if "in_channels" in params and "in_channels" not in args:
            args["in_channels"] = in_channels
        model = _call(name, fn, args)
        if not isinstance(model, nn.Module):
            raise ValueError(f"model {name!r}: the factory returned {type(model).__name__}, not an nn.Module")
        if not isinstance(model, TappedModel):
            if layers is None or layers == "auto":
                raise ValueError(
                    f"model {name!r} returned a plain {type(model).__name__} without tap_names: "
                    "name the submodules to tap (train.layers / layers=[...], dotted names as in "
                    "named_modules()), or return dainv.models.tapped(module, layers)"
                )
            model = tapped(model, [layers] if isinstance(layers, str) else list(layers))
    else:
        builder, extra = _lookup(name)
        model = _call(name, builder, dict(kwargs, **extra, num_classes=num_classes, in_channels=in_channels))
    if layers is not None and layers != "auto":
        model.check_taps([layers] if isinstance(layers, str) else list(layers))
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    for attr in ("_orig_mod", "module"):  # torch.compile, DDP
        while not hasattr(model, "tap_names") and hasattr(model, attr):
            model = getattr(model, attr)
    return model


def resolve_layers(model: nn.Module, layers: Sequence[str] | str | None = "auto") -> list[str]:
    """The layers to tap, in layer order.

    Args:
        model: a :class:`TappedModel` (possibly inside DDP or ``torch.compile``).
        layers: ``"auto"`` (or None) for every tap but ``"input"``, or a list of names.

    Returns:
        The names in the model's layer order.

    Raises:
        ValueError: unknown names, or a model without the tap protocol.
    """
    net = _unwrap(model)
    if not hasattr(net, "tap_names"):
        raise ValueError(
            f"{type(net).__name__} has no tap_names; wrap it with dainv.models.tapped(module, layers)"
        )
    if layers is None or layers == "auto":
        return [n for n in net.tap_names if n != "input"]
    return list(net.check_taps([layers] if isinstance(layers, str) else list(layers)))
