"""One typed configuration for a run (:class:`RunConfig`) from presets, files and ``key=value`` overrides
(:func:`load_config`). Each setting is declared once, next to its default, as ``Annotated[type, check, ...]``: the
type is checked as each source is merged (:func:`from_dict`), the checks by :func:`validate`."""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, get_args, get_origin, get_type_hints

import yaml

from dainv.augment import SCHEMES, Interpolation, TrainSampling
from dainv.data import check_dataset_spec
from dainv.errors import ConfigError
from dainv.invariance.loss import Denominator
from dainv.models import build_model, check_model_name
from dainv.runtime import Precision, resolve_device

#: The arms (docs/method.md §5): views per seed (M) and the DAI weight α; the one table of arms.
ARMS: dict[str, dict[str, Any]] = {
    "baseline": {"views": 1, "alpha": 0.0},
    "dai": {"views": 8, "alpha": 0.1},
    "control": {"views": 8, "alpha": 0.0},
}

#: ``method.protocol``: the settings each protocol fixes (docs/method.md, "Paper text vs the authors'
#: code"): ``paper``, the paper's text (the defaults); ``authors_code``, the authors' released code.
PROTOCOLS: dict[str, dict[str, Any]] = {
    "paper": {},
    "authors_code": {"train.denominator": "same_class", "eval.scheme": "heavier_eval_authors"},
}

MAX_EPOCHS, MAX_BATCH, MAX_SEED, MAX_COUNT = 10_000, 65_536, 2**31 - 1, 1_000_000_000  # MAX_COUNT: images, steps


def _num(v: Any) -> str:
    """A value for a message, numbers short (``1e39``; huge integers too)."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10**12:
        v = float(f"{v:.3g}") if abs(v) < 10**308 else f"an integer of {len(str(abs(v)))} digits"
    return f"{v:g}".replace("e+0", "e").replace("e+", "e") if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Range:
    """A check (what is wrong with a value, or None): ``lo ≤ x ≤ hi`` for a number or each of a list's (None:
    no bound; ``open``: "lo"/"hi" ends excluded); the message shows ``say`` or the bounds, then ``why``."""

    lo: float | None
    hi: float | None = None
    open: str = ""
    why: str = ""
    say: str = ""

    def __call__(self, v: Any) -> str | None:
        lo, hi = -math.inf if self.lo is None else self.lo, math.inf if self.hi is None else self.hi
        lo_in, hi_in = "lo" not in self.open, "hi" not in self.open
        items = v if isinstance(v, list) else [v]
        if all((lo <= x if lo_in else lo < x) and (x <= hi if hi_in else x < hi) for x in items):
            return None
        if self.lo is None:
            bounds = f"at most {hi:,}"
        elif self.say or self.hi is None:
            bounds = self.say or f"{'>=' if lo_in else '>'} {_num(lo)}"
        elif isinstance(v, float):
            bounds = f"in {'[' if lo_in else '('}{_num(lo)}, {_num(hi)}{']' if hi_in else ')'}"
        else:
            bounds = f"from {_num(lo)} to {_num(hi)}"
        if isinstance(v, list):
            return f"must list {self.why or 'numbers'} {bounds}, got {_num(v)}"
        return f"must be {bounds}{' ' + self.why if self.why else ''}, got {_num(v)}"


def AtMost(hi: int, why: str = "") -> Range:  # a limit of sense; why: the usual value
    return Range(None, hi, why=why)


def Nonblank(hint: str):  # text with more than blanks; hint: what to give
    return lambda v: None if isinstance(v, str) and v.strip() else f"{hint}, got {v!r}"


def OneOf(choices: tuple[str, ...]):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}, got {v!r}"


def _increasing(v: list[int]) -> str | None:
    return None if v == sorted(v) else f"must be increasing, got {v}"


def _distinct_layers(v: str | list[str]) -> str | None:
    if not v:
        return "name at least one layer, or auto"
    return f"repeated layer names in {v}" if v != "auto" and len(set(v)) != len(v) else None


Seed = Annotated[int, Range(0, MAX_SEED)]
Every = Annotated[int, Range(1), AtMost(MAX_COUNT)]  # epochs or steps between events
Epochs = Annotated[list[int], Range(1, MAX_EPOCHS, why="epoch numbers")]
LayerNames = str | list[str]  # "auto" or names (one syntax: layer_list)


# The settings. Defaults are the paper's: a bare RunConfig is the paper's DAI arm (docs/method.md §5).
@dataclass
class DataConfig:
    dataset: str = "cifar10"  # cifar10 | cifar100 | npz:PATH | folder:PATH | tinyimagenet:PATH
    root: Annotated[str | None, Nonblank("give a folder, or null for $DAINV_DATA")] = None
    n_train: Annotated[int | None, Range(1, why="or null (all)"), AtMost(MAX_COUNT)] = None  # the first n
    n_test: Annotated[int | None, Range(2, why="or null (all; Eq. 2's denominator is the mean distance to "
                                      "the other test images, docs/method.md §2)"), AtMost(MAX_COUNT)] = None
    image_size: Annotated[int | None, Range(8, 4096, why="pixels, or null (the images' own size)")] = None  # folder data
    skip_bad: bool = False  # folder data: skip unreadable images (counted) instead of failing


@dataclass
class ModelConfig:
    name: str = "allcnnc"  # a registered model, or module.path:factory
    width: Annotated[float, Range(0, open="lo"), AtMost(64, "(a channel multiplier; the paper: 1)")] = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)  # more constructor arguments


@dataclass
class AugmentConfig:
    scheme: str = "heavier"  # a scheme of dainv.augment.SCHEMES
    sampling: TrainSampling = "truncnorm"  # the authors' configs | the paper's wording
    interpolation: Interpolation = "bilinear"  # bilinear: the authors' pipeline


@dataclass
class TrainConfig:
    epochs: Annotated[int, Range(0, open="lo", say="a positive number of epochs"),
                      AtMost(MAX_EPOCHS, "(the paper trains 350)")] = 350  # fmt: skip
    batch_size: Annotated[int, Range(0, open="lo"), AtMost(MAX_BATCH, "samples per step (the paper: 128)")] = 128  # K×M
    views: Annotated[int, Range(1, why="(1 = baseline)")] = 8  # M
    lr: Annotated[float, Range(0, open="lo", say="a positive learning rate"),
                  AtMost(10, "(the paper: 0.01; larger diverges at once)")] = 0.01  # fmt: skip
    momentum: Annotated[float, Range(0, 1, open="hi")] = 0.9
    nesterov: bool = True
    weight_decay: Annotated[float, Range(0, 1, why="(the paper: 0)")] = 0.0
    lr_factor: Annotated[float, Range(0, 1, open="lo", why="(the lr is multiplied by it at each milestone)")] = 0.1
    milestones: Annotated[Epochs, _increasing] = field(default_factory=lambda: [200, 250, 300])
    alpha: Annotated[float, Range(0, 1, open="hi", why="(the CE term weighs 1 − alpha)")] = 0.1  # Σ_l α_l (Eq. 4)
    alpha_ratio: Annotated[float, Range(0, 1e6, open="lo", why="(the paper: 10)")] = 10.0  # α_last / α_first
    layers: Annotated[LayerNames, _distinct_layers] = "auto"  # auto: the model's tap_names (input excluded)
    denominator: Denominator = "all"  # the paper | the authors' code
    precision: Precision = "fp32"  # auto: bf16 on GPUs and CPUs with native bf16
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False  # DDP only
    monitor_batches: Annotated[int, Range(0, 1000, why="(0: off)")] = 2  # K×8-view batches measuring L_l
    log_every: Every = 50  # steps between host syncs (progress bar, NaN check)
    checkpoint_every: Every = 1  # epochs
    # also kept as checkpoints/epoch-NNNN.pt; may pass train.epochs (a preset's list holds when
    # --epochs shortens a run, and they are kept if the run is extended)
    keep_epochs: Epochs = field(default_factory=list)
    eval_every: Every = 1  # epochs between test-accuracy passes (the last epoch always)
    monitor_every: Every = 1  # epochs between L_l monitoring passes (the last epoch always)
    cuda_graphs: bool = False  # capture the whole training step as a CUDA graph
    tf32: bool = True  # fp32 convolutions/matmuls in TF32 on Ampere and newer GPUs


@dataclass
class EvalConfig:
    scheme: str = "heavier_eval"  # a scheme of dainv.augment.SCHEMES
    transforms: Annotated[int, Range(1, 1000)] = 5  # transformations per test image (Eq. 2)
    tta_views: Annotated[int, Range(1, 1000)] = 10  # light views for the mean-softmax accuracy
    batch_size: Annotated[int, Range(1, MAX_BATCH)] = 500
    per_transform: bool = False
    seed: Seed = 0


@dataclass
class MethodConfig:
    # paper: the paper's text; authors_code: the authors' code's choices (same-class Eq. 3, contrast {0.25, 1.25})
    protocol: Annotated[str, OneOf(tuple(PROTOCOLS))] = "paper"


@dataclass
class RunConfig:
    name: Annotated[str, Nonblank("give the run a name")] = "run"
    seed: Seed = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    method: MethodConfig = field(default_factory=MethodConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    description: str = ""


class Spec(NamedTuple):  # a setting's declaration
    kind: Any  # bool, int, float, str, list, dict or LayerNames
    nullable: bool
    checks: tuple


def _specs(cls: type, prefix: str = "") -> dict[str, Spec]:
    out = {}
    for name, tp in get_type_hints(cls, include_extras=True).items():
        if is_dataclass(tp):
            out.update(_specs(tp, f"{prefix}{name}."))
            continue
        checks = getattr(tp, "__metadata__", ())
        tp = get_args(tp)[0] if checks else tp
        nullable = type(None) in get_args(tp)
        tp = get_args(tp)[0] if nullable else tp
        if get_origin(tp) is Literal:
            tp, checks = str, (OneOf(get_args(tp)), *checks)
        out[prefix + name] = Spec(tp if tp == LayerNames else get_origin(tp) or tp, nullable, checks)
    return out


#: Every setting's declaration by key (``train.lr``), in the order of the dataclasses.
SPECS: dict[str, Spec] = _specs(RunConfig)

#: The only keys that take null (their default is null: "all" / "the data set's own").
NULLABLE = frozenset(k for k, s in SPECS.items() if s.nullable)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    return asdict(cfg)


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def _get(cfg: RunConfig, key: str) -> Any:
    return functools.reduce(getattr, key.split("."), cfg)


def model_kwargs(m: ModelConfig) -> dict[str, Any]:
    return {**m.kwargs, **({"width": m.width} if m.width != 1.0 else {})}


def layer_list(val: Any) -> str | list[str] | None:
    """``"auto"`` or the layer names ``val`` spells (a list, or ``conv7,conv8`` also in brackets),
    else ``None``: the one syntax of ``train.layers`` and ``dainv evaluate --layers``."""
    if isinstance(val, str) and val.strip() == "auto":
        return "auto"
    if isinstance(val, str):
        text = val.strip()
        val = text[1:-1].split(",") if text.startswith("[") and text.endswith("]") else text.split(",")
    elif isinstance(val, int) and not isinstance(val, bool):
        val = [val]
    if not isinstance(val, (list, tuple)):
        return None
    names = [  # a Sequential's layers are named 0, 1, 2 ...
        str(v) if isinstance(v, int) and not isinstance(v, bool) else v.strip().strip("'\"").strip() if isinstance(v, str) else None
        for v in val
    ]
    return names if names and all(names) else None


def _as_int(val: Any) -> int | None:
    """Ints (not bools) and integral finite floats (``1e3``); else None."""
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        return None
    return val if isinstance(val, int) else int(val) if math.isfinite(val) and val.is_integer() else None


def _as_float(val: Any) -> float | None:
    if isinstance(val, bool) or not isinstance(val, (int, float)):
        return None
    try:
        return float(val)
    except OverflowError:  # an int too large for a float: not finite
        return math.inf


def _as_ints(val: Any) -> list[int] | None:
    ints = [_as_int(v) for v in val] if isinstance(val, (list, tuple)) else [None]
    return None if None in ints else ints


#: Per declared type: the value as that type (None: it does not fit), what it takes, an example.
_KINDS: dict[Any, tuple[Any, str, str]] = {
    bool: (lambda v: v if isinstance(v, bool) else None, "true/false", ""),
    int: (_as_int, "an integer", ""),
    float: (_as_float, "a number", "; e.g. 0.01 or 1e-3"),
    str: (lambda v: v if isinstance(v, str) else None, "a string", ""),
    list: (_as_ints, "a list of integers (epoch numbers)", "; e.g. [50, 100]"),
    dict: (lambda v: dict(v) if isinstance(v, dict) and all(isinstance(k, str) for k in v) else None, "a mapping with names as keys", ""),
    LayerNames: (layer_list, "'auto' or layer names", "; e.g. train.layers=[conv7,conv8,conv9] or train.layers=conv7,conv8,conv9"),
}


def _floats(val: Any, path: str) -> Iterator[tuple[str, float]]:
    """``(key, x)`` for every float in ``val``, in mappings (``model.kwargs.p``) and lists too."""
    if isinstance(val, float):
        yield path, val
    elif isinstance(val, (dict, list, tuple)):
        for k, v in val.items() if isinstance(val, dict) else enumerate(val):
            yield from _floats(v, f"{path}.{k}" if isinstance(val, dict) else path)


def _coerce(val: Any, cur: Any, path: str, at: str) -> Any:
    """``val`` as the declared type of ``path``, finite; else a ConfigError saying what it takes."""
    if val is None:
        if SPECS[path].nullable:
            return None
        shown = yaml.safe_dump(cur, default_flow_style=True).strip().removesuffix("...").strip()
        raise ConfigError(f"config key '{path}' has no value{at}; give a value (currently {shown}, e.g. "
                          f"--set {path}={shown}) or leave the key out to keep it")  # fmt: skip
    convert, takes, example = _KINDS[SPECS[path].kind]
    out = convert(val)
    if out is None:
        raise ConfigError(f"config key '{path}' takes {takes}, got {val!r}{example}{at}")
    for key, x in _floats(out, path):  # NaN and ±inf nowhere, model.kwargs included
        if not math.isfinite(x):
            raise ConfigError(f"config key '{key}' takes a finite number, got {_num(val if key == path else x)}{at}")
    return out


def _merge(obj: Any, updates: dict[str, Any], where: str, source: str | None, record: dict | None) -> Any:
    """A copy of dataclass ``obj`` with ``updates`` (nested dicts) applied; unknown keys raise."""
    known, at, changes = {f.name for f in fields(obj)}, f" (in {source})" if source else "", {}
    for key, val in updates.items():
        path = f"{where}{key}"
        if key not in known:
            raise ConfigError(f"unknown config key '{path}'; valid keys here: {', '.join(sorted(known))}{at}")
        cur = getattr(obj, key)
        if is_dataclass(cur):
            if val is None:
                raise ConfigError(f"config section '{path}' is empty{at}; give its keys or delete the line")
            if not isinstance(val, dict):
                raise ConfigError(f"config key '{path}' is a section; give a mapping of its keys, got {val!r}{at}")
            changes[key] = _merge(cur, val, f"{path}.", source, record)
        else:
            changes[key] = _coerce(val, cur, path, at)
            if record is not None:
                record[path] = source or "a config mapping"
    return dataclasses.replace(obj, **changes)


def from_dict(
    d: dict[str, Any], base: RunConfig | None = None, source: str | None = None, record: dict[str, str] | None = None
) -> RunConfig:
    """A :class:`RunConfig` from a nested mapping over ``base``; ``record`` gets ``{key: source}``."""
    source = source or getattr(d, "source", None)
    if not isinstance(d, dict):
        raise ConfigError(f"a config must be a mapping of keys to values, got {type(d).__name__}" + (f" (in {source})" if source else ""))
    return _merge(base or RunConfig(), d, "", source, record)


def validate(cfg: RunConfig, record: dict[str, str] | None = None) -> None:
    """:class:`ConfigError` for the first invalid setting (cheap checks first), where it was set."""
    for key, why in itertools.chain(_declared(cfg), _rules(cfg, record or {}), _judges(cfg)):
        raise ConfigError(f"invalid setting {key}: {why}" + (f" (set in {record[key]})" if key in (record or {}) else ""))


def _declared(cfg: RunConfig) -> Iterator[tuple[str, str]]:
    """``(key, what is wrong)`` from :data:`SPECS` (each check may assume those before it passed)."""
    for key, spec in SPECS.items():
        v = _get(cfg, key)
        if v is None and not spec.nullable:
            yield key, "has no value; give one or leave the key out to keep the default"
        for where, x in _floats(v, key):  # a config built in code: from_dict refuses these
            if not math.isfinite(x):
                yield where, f"must be a finite number, got {x}"
        for check in spec.checks if v is not None else ():
            if why := check(v):
                yield key, why


def _rules(cfg: RunConfig, record: dict[str, str]) -> Iterator[tuple[str, str]]:
    """The rules between settings."""
    t, proto = cfg.train, cfg.method.protocol
    at = f" (set in {record['method.protocol']})" if "method.protocol" in record else ""
    for key, want in PROTOCOLS[proto].items():  # an explicit contradiction, or a hand-edited config.yaml
        if _get(cfg, key) != want:
            yield key, (f"method.protocol={proto}{at} needs {key}={want}, got {_get(cfg, key)!r}; drop one of "
                        f"the two, or use method.protocol=paper to set {key} on its own")  # fmt: skip
    if t.batch_size % t.views:
        yield "train.batch_size", (f"{t.batch_size} samples per step is not divisible by {t.views} views per seed; "
                                   "choose a batch size that is a multiple of train.views")  # fmt: skip
    if t.alpha > 0 and t.views < 2:
        yield "train.alpha", "the DAI loss needs several views per seed: set train.views >= 2 or alpha=0"
    if cfg.data.n_train is not None and cfg.data.n_train < t.batch_size // t.views:
        yield "data.n_train", f"{cfg.data.n_train} images cannot fill {t.batch_size // t.views} seeds per step"


def _judges(cfg: RunConfig) -> Iterator[tuple[str, str]]:
    """The settings whose valid values other modules know: models, layers, schemes, data, devices."""
    yield from _model_judged(cfg)
    for key in ("augment.scheme", "eval.scheme"):
        if _get(cfg, key) not in SCHEMES:
            yield key, f"unknown scheme {_get(cfg, key)!r}; choose from {sorted(SCHEMES)}"
    try:
        check_dataset_spec(cfg.data.dataset)
    except ValueError as e:
        yield "data.dataset", str(e)
    if not isinstance(cfg.device, str):
        yield "device", f"must be auto, cpu, cuda or cuda:N, got {cfg.device!r}"
    try:
        resolve_device(cfg.device)
    except ConfigError as e:
        yield "device", str(e)


def _model_judged(cfg: RunConfig) -> Iterator[tuple[str, str]]:
    """The model's name and options, and ``train.layers`` against its taps (built on the meta device)."""
    m, layers = cfg.model, None if cfg.train.layers == "auto" else cfg.train.layers
    if not isinstance(m.name, str):
        yield "model.name", f"give a model name, got {m.name!r}"
    try:
        check_model_name(m.name)
    except ValueError as e:
        yield "model.name", str(e)
    try:
        build_model(m.name, 10, 3, layers, shapes_only=True, **model_kwargs(m))
    except (TypeError, ValueError, RuntimeError) as err:
        if layers is not None:  # the layers' fault when the model builds without them
            try:
                build_model(m.name, 10, 3, shapes_only=True, **model_kwargs(m))
            except (TypeError, ValueError, RuntimeError):
                pass
            else:
                yield "train.layers", str(err)
        yield "model", str(err)


#: Settings that do not change a run's result (only where and how fast it runs, what it logs and
#: keeps): the one "same run?" rule, :func:`differences`, lets them differ.
RESULT_NEUTRAL = frozenset({
    "name", "description", "device", "data.root", "train.compile", "train.cuda_graphs",
    "train.log_every", "train.checkpoint_every", "train.keep_epochs", "train.eval_every", "train.monitor_every",
})  # fmt: skip


def differences(mine: Any, theirs: Any, *, length: bool = True) -> list[tuple[str, Any, Any]]:
    """The one "same run?" rule: ``(key, theirs, mine)`` for each setting outside :data:`RESULT_NEUTRAL` in which
    two configs (or their dicts) differ; ``length=False``: ``train.epochs`` may differ (a resume that extends)."""
    a, b = (flat_items(c if isinstance(c, dict) else to_dict(c)) for c in (mine, theirs))
    skip = RESULT_NEUTRAL if length else RESULT_NEUTRAL | {"train.epochs"}
    return [(k, b.get(k), a.get(k)) for k in dict.fromkeys([*a, *b]) if k not in skip and a.get(k) != b.get(k)]


def flat_items(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict as ``{"section.key": value}`` (an empty mapping stays one value)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(flat_items(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out

#: The presets folder: ``src/dainv/presets`` (a link to the repository's ``configs/``).
PRESET_DIR = Path(__file__).resolve().parent / "presets"

#: A preset's keys for ``dainv reproduce`` (the arms it trains, variants, more evaluation schemes).
REPRODUCE_KEYS = ("arms", "variants", "eval_schemes")


class _DuplicateKey(yaml.YAMLError):
    """A key given twice in one mapping: ``args`` are the key and its two lines."""


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader; ``1e-3`` is a float (YAML 1.1 wants a dot), a key given twice an error."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


ConfigLoader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_implicit_resolver(  # 1e-3, 5E4, -1e-3
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str, where: str = "the YAML text", *, else_text: bool = False) -> Any:
    """YAML by :class:`ConfigLoader`, ``where`` named in errors (``else_text``: not YAML → the text)."""
    try:
        return yaml.load(text, Loader=ConfigLoader)
    except _DuplicateKey as e:
        key, first, again = e.args
        lines = f" (lines {first} and {again})" if first != again else ""
        raise ConfigError(f"{where}: key {key!r} is given twice{lines}; keep one of them (a later one would silently win)") from None
    except yaml.YAMLError as e:
        if else_text:
            return text
        raise ConfigError(f"{where} is not valid YAML: {e}") from None


class _Sourced(dict):
    source: str | None = None  # the file the mapping was read from: from_dict names it


def _read_yaml(path: Path, source: str | None = None) -> dict[str, Any]:
    """The mapping in a YAML file (empty file: ``{}``); UTF-8 only, no duplicate keys."""
    path, source = Path(path), source or f"config file {path}"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{source} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); save it as UTF-8") from None
    data = parse_yaml(text, source)
    if not isinstance(data, (dict, type(None))):
        raise ConfigError(f"{source} must hold a mapping of keys to values, got {type(data).__name__}")
    out = _Sourced(data or {})
    out.source = source
    return out


def read_run_config(path: str | Path) -> RunConfig:
    """A config file (a run's ``config.yaml``) as a :class:`RunConfig`, the file named in every error."""
    return from_dict(_read_yaml(Path(path)))


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a preset (``configs/NAME.yaml``)."""
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown preset '{name}'; available presets: {', '.join(list_presets())} (in {PRESET_DIR})")
    return _read_yaml(path, f"preset '{name}'")


def run_settings(raw: dict[str, Any]) -> dict[str, Any]:
    """A preset's mapping without :data:`REPRODUCE_KEYS` (a copy of its type: it keeps its source)."""
    out = copy.copy(raw)
    for key in REPRODUCE_KEYS:
        out.pop(key, None)
    return out


def preset_variants(preset: str | dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A preset's arm variants: ``{name: {"arm": base arm, "set": {key: value}}}``."""
    raw = load_preset(preset) if isinstance(preset, str) else preset
    variants = raw.get("variants") or {}
    where = f"preset '{preset}'" if isinstance(preset, str) else "the preset"
    if not isinstance(variants, dict):
        raise ConfigError(f"'variants' in {where} must map a name to {{arm: ..., set: {{key: value}}}}")
    for name, v in variants.items():
        ok = isinstance(v, dict) and v.get("arm") in ARMS and isinstance(v.get("set", {}), dict)
        if not ok or name in ARMS or not isinstance(name, str) or set(v) - {"arm", "set"}:
            raise ConfigError(f"variant '{name}' in {where} must be {{arm: one of {', '.join(ARMS)}, set: {{key: value}}}} "
                              "under a name that is not an arm's")  # fmt: skip
    return variants


def _nested(key: str, val: Any) -> dict[str, Any]:
    """``a.b.c``, v → ``{a: {b: {c: v}}}``."""
    for part in reversed(str(key).strip().split(".")):
        val = {part: val}
    return val


def apply_overrides(cfg: RunConfig, overrides: list[str], record: dict[str, str] | None = None) -> RunConfig:
    """Apply ``section.key=value`` strings, values read as YAML; ``key=`` is null (:data:`NULLABLE`)."""
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            what = "has no key; write" if eq else "must look like"
            raise ConfigError(f"override '{item}' {what} key=value, e.g. train.epochs=10")
        source = f"--set {item}"
        val = parse_yaml(raw, source, else_text=True) if raw.strip() else None
        spec = SPECS.get(key.strip())
        if val is not None and not isinstance(val, str) and spec and spec.kind is str:
            val = raw.strip()  # name=123, data.dataset=npz: (YAML would read a number, a mapping)
        cfg = from_dict(_nested(key, val), cfg, source, record)
    return cfg


def resolve_protocol(cfg: RunConfig, record: dict[str, str] | None = None) -> RunConfig:
    """Apply ``method.protocol``'s settings to the keys not set explicitly (``record``)."""
    for key, want in PROTOCOLS.get(cfg.method.protocol, {}).items():
        if key not in (record or {}):
            cfg = from_dict(_nested(key, want), cfg)
    return cfg


def load_config(
    preset: str | None = None, files: list[str | Path] = (), overrides: list[str] = (), arm: str | None = None
) -> RunConfig:
    """Defaults ← preset ← files ← arm (or variant) ← its settings ← overrides ← protocol; validated."""
    record: dict[str, str] = {}
    cfg, variant = RunConfig(), {}
    if preset:
        raw = load_preset(preset)
        variant = preset_variants(raw).get(arm, {})
        cfg = from_dict(run_settings(raw), cfg, record=record)
    for f in files:
        cfg = from_dict(_read_yaml(Path(f)), cfg, record=record)
    if arm:  # views and α of one of ARMS
        base = variant.get("arm", arm)
        if base not in ARMS:
            raise ConfigError(f"unknown arm '{base}'; choose from {', '.join(ARMS)}")
        cfg = from_dict({"train": ARMS[base]}, cfg, f"--arm {base}", record)
    for key, val in variant.get("set", {}).items():  # a variant: its arm plus these settings
        cfg = from_dict(_nested(key, val), cfg, f"variant '{arm}' of preset '{preset}'", record)
    cfg = resolve_protocol(apply_overrides(cfg, list(overrides), record), record)
    validate(cfg, record)
    return cfg
