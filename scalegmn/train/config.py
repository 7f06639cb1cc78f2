"""Run configuration: one YAML file per experiment (``scalegmn/configs/train``), validated before
anything runs; ``--set key=value`` overrides any field."""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import yaml

from .. import allocator
from ..config import ModelConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"
TASKS = ("inr_classification", "generalization", "inr_editing")


@dataclass
class DataConfig:
    """``path: null`` uses the built-in generated data set of the format (made if absent)."""
    format: str = "dwsnets-mnist"
    path: Optional[str] = None
    options: dict = field(default_factory=dict)
    batch_size: int = 64
    augment: bool = False
    limit: Optional[int] = None          # use at most this many networks per split
    default_size: int = 2000             # size of the generated default data set
    editing: str = "dilate"              # inr_editing target


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 1e-3
    weight_decay: float = 1e-2
    clip: float = 10.0
    warmup_steps: int = 100
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    eval_every: int = 1
    progress: bool = True
    threads: Optional[int] = None
    deterministic: bool = False   # one thread + deterministic kernels: bitwise-repeatable runs
    # scalegmn.allocator policy: auto = lean with model.checkpoint, else keep (2x faster steps)
    malloc: str = "auto"

    def __post_init__(self):
        if self.malloc not in allocator.SETTINGS:
            raise ValueError(f"malloc must be one of {allocator.SETTINGS}, got {self.malloc!r}")


@dataclass
class RunConfig:
    task: str = "inr_classification"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(key, value, tp):
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp)]
        if value is None and type(None) in args:
            return value
        tp = next(a for a in args if a is not type(None))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and
                                              not (tp is int and isinstance(value, bool))):
        raise ValueError(f"config key '{key}' must be {tp.__name__}, got {value!r}")
    if tp is dict and not isinstance(value, dict):
        raise ValueError(f"config key '{key}' must be a mapping, got {value!r}")
    return value


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ValueError(f"config section '{prefix}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown config key '{prefix}.{unknown[0]}' (known: {sorted(names)})")
    kwargs = {}
    for k, v in data.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, f"{prefix}.{k}")
        else:
            kwargs[k] = _check_type(f"{prefix}.{k}", v, tp)
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ValueError(f"config section '{prefix}': {e}") from e


def _set(d: dict, dotted: str, value):
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
        if not isinstance(cur, dict):
            raise ValueError(f"--set {dotted}: '{k}' is not a section")
    cur[keys[-1]] = value


def list_configs() -> list:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_config(name_or_path: str, overrides=()) -> RunConfig:
    """A validated ``RunConfig`` from a shipped config name or a YAML path, with ``key=value``
    overrides (values parsed as YAML)."""
    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"no config '{name_or_path}'; shipped configs: {list_configs()}")
    data = yaml.safe_load(path.read_text()) or {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        _set(data, k.strip(), yaml.safe_load(v))
    cfg = _build(RunConfig, data, "config")
    if cfg.task not in TASKS:
        raise ValueError(f"config key 'config.task' must be one of {TASKS}, got {cfg.task!r}")
    if cfg.data.path is not None and not Path(cfg.data.path).exists():
        raise ValueError(f"config key 'data.path': no such folder '{cfg.data.path}'")
    return cfg
