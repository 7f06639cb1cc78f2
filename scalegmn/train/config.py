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
from ..config import ModelConfig, check_type, upgrade_legacy

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "train"
TASKS = ("inr_classification", "generalization", "inr_editing")
#: the model each task trains (``model.task``: set from the run's task when left out)
MODEL_TASK = {"inr_classification": "invariant", "generalization": "invariant",
              "inr_editing": "equivariant"}


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
    model: ModelConfig = field(default_factory=lambda: ModelConfig.from_dict({}))
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        """Plain data (the ``model`` section flat, as ``ModelConfig.to_dict``)."""
        return {"task": self.task, "data": dataclasses.asdict(self.data),
                "model": self.model.to_dict(), "train": dataclasses.asdict(self.train)}


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
        if tp is ModelConfig:      # one validator for model configs (scalegmn.config)
            kwargs[k] = ModelConfig.from_dict(v, f"{prefix}.{k}".removeprefix("config."))
        elif dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, f"{prefix}.{k}")
        else:
            kwargs[k] = check_type(f"{prefix}.{k}", v, tp)
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


def parse_overrides(overrides) -> list:
    """``[(dotted key, value)]`` from ``key=value`` strings (values parsed as YAML)."""
    out = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set takes key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out.append((k.strip(), yaml.safe_load(v)))
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item}: the value is not valid YAML "
                             f"({str(e).splitlines()[0]})") from e
    return out


def _with_model_task(data: dict) -> dict:
    """``data`` with ``model.task`` set from the run's task when the model section leaves it
    out (one given that contradicts the run's task is refused by the runner, by name)."""
    task = data.get("task", RunConfig.task)
    if task not in TASKS:
        raise ValueError(f"config key 'config.task' must be one of {TASKS}, got {task!r}")
    model = data.get("model", {})
    if isinstance(model, dict) and "task" not in model:
        data = {**data, "model": {**model, "task": MODEL_TASK[task]}}
    return data


def _validate(data: dict) -> RunConfig:
    cfg = _build(RunConfig, _with_model_task(data), "config")
    if cfg.model.task != MODEL_TASK[cfg.task]:
        raise ValueError(f"config key 'model.task' is {cfg.model.task!r} but task {cfg.task} "
                         f"trains an {MODEL_TASK[cfg.task]} model: leave model.task out or set "
                         f"it to {MODEL_TASK[cfg.task]}")
    if cfg.data.path is not None and not Path(cfg.data.path).exists():
        raise ValueError(f"config key 'data.path': no such folder '{cfg.data.path}'")
    return cfg


def load_config(name_or_path: str, overrides=(), drop_unread: bool = False) -> RunConfig:
    """A validated ``RunConfig`` from a shipped config name or a YAML path, with ``key=value``
    overrides (values parsed as YAML). ``drop_unread``: the config was written for another
    backend (an override sets ``model.backend``): its model keys the new backend's family does
    not read are dropped instead of refused (``scalegmn benchmark`` derives some backends' runs
    this way). A config saved by a run of an older version (its model section has ``extra``) is
    read through ``upgrade_run_dict``, so ``--config old_run/config.yaml`` works."""
    path = Path(name_or_path)
    if not path.is_file():
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"no config '{name_or_path}'; shipped configs: {list_configs()}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"config '{path}' is not valid YAML: "
                         f"{' '.join(str(e).split())}") from e
    if isinstance(data, dict):   # an older run's config.yaml (``extra`` key): today's form
        data = upgrade_run_dict(data)
    for k, v in parse_overrides(overrides):
        _set(data, k, v)
    if drop_unread and isinstance(data.get("model"), dict):
        from ..registry import config_class
        known = config_class(data["model"].get("backend", "scalegmn")).keys()
        data["model"] = {k: v for k, v in data["model"].items() if k in known}
    return _validate(data)


# -- resuming a run -----------------------------------------------------------------------------
#: keys a resumed run may change: how long and how it runs and where its data now lives, never
#: what it trains (model, data format and options, optimiser, seed, dtype: fixed by the checkpoint)
RESUMABLE_KEYS = ("train.epochs", "train.eval_every", "train.progress", "train.threads",
                  "train.device", "train.malloc", "train.deterministic", "data.path")


def flatten_config(d: dict) -> dict:
    """``{dotted key: value}`` of a config dict (sections ``data``, ``model``, ``train``
    flattened; ``data.options`` stays whole)."""
    out = {}
    for k, v in d.items():
        if k in ("data", "model", "train") and isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


def config_conflicts(a: dict, b: dict, allowed=RESUMABLE_KEYS) -> list:
    """``[(key, value in a, value in b)]`` for every key of two config dicts that differs,
    except the ``allowed`` ones."""
    fa, fb = flatten_config(a), flatten_config(b)
    return [(k, fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if k not in allowed and fa.get(k) != fb.get(k)]


def upgrade_run_dict(d: dict) -> dict:
    """A run config dict saved by an older version in today's form (its ``model`` section
    through ``scalegmn.config.upgrade_legacy``; a classification run's ``out_dim: 1`` meant
    "from the data", and ``model.task``, which the run's task overwrote, is left to follow it).
    Today's dicts come back unchanged."""
    d = dict(d)
    if isinstance(d.get("model"), dict):
        legacy = "extra" in d["model"]
        d["model"] = upgrade_legacy(d["model"], d.get("task") == "inr_classification")
        if legacy:   # the old model.task was overwritten by the run's task: it follows it now
            d["model"].pop("task", None)
    return d


def saved_run_config(run_dir):
    """``(config dict, source)`` of the run in ``run_dir``: the config inside
    ``checkpoints/last.pt`` (the one its weights were trained with), else ``config.yaml``;
    ``None`` when the folder holds neither."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if last.is_file():
        import torch
        try:
            st = torch.load(last, weights_only=False, map_location="cpu")
        except Exception as e:     # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"cannot read checkpoint '{last}' ({type(e).__name__}: {e}); "
                             f"resume from an intact run, or start a new one with another "
                             f"--out") from e
        if not isinstance(st, dict) or not isinstance(st.get("config"), dict):
            raise ValueError(f"'{last}' is not a checkpoint written by scalegmn train")
        return upgrade_run_dict(st["config"]), last
    path = run_dir / "config.yaml"
    if path.is_file():
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"'{path}' is not valid YAML: {' '.join(str(e).split())}") from e
        if not isinstance(data, dict):
            raise ValueError(f"'{path}' does not hold a run config")
        return upgrade_run_dict(data), path
    return None


def load_run_config(run_dir, overrides=(), config=None) -> Optional[RunConfig]:
    """The config of the run in ``run_dir`` for ``--resume``: the run's own (see
    ``saved_run_config``), with ``overrides`` applied. An override of a key outside
    ``RESUMABLE_KEYS`` that changes its value raises ``ValueError`` naming the key; so does a
    ``config`` (a config name or path) whose task, backend or data format differ from the run's.
    ``None`` when ``run_dir`` holds no run."""
    found = saved_run_config(run_dir)
    if found is None:
        return None
    saved, source = found
    saved_cfg = _build(RunConfig, _with_model_task(saved), "config")
    data = saved_cfg.to_dict()
    pairs = parse_overrides(overrides)
    for k, v in pairs:
        _set(data, k, v)
    where = data.get("data", {}).get("path")
    if where is not None and not Path(where).exists():
        raise ValueError(f"the run's data folder '{where}' (data.path in '{source}') does not "
                         f"exist here: resume from the folder the run was started in, or pass "
                         f"--set data.path=WHERE_IT_IS_NOW")
    cfg = _validate(data)
    for key, new, old in config_conflicts(cfg.to_dict(), saved_cfg.to_dict()):
        item = next((f"{k}={v}" for k, v in pairs if k == key or k.startswith(key + ".")),
                    f"{key}={new}")
        raise ValueError(f"--set {item} contradicts the run in '{run_dir}' ({key}: {old!r} in "
                         f"'{source}'); a resumed run may change only {', '.join(RESUMABLE_KEYS)}:"
                         f" drop it, or start a new run with another --out")
    if config is not None:
        named = flatten_config(load_config(config).to_dict())
        ours = flatten_config(saved_cfg.to_dict())
        for key in ("task", "model.backend", "data.format"):
            if named[key] != ours[key]:
                raise ValueError(f"--config {config} has {key} {named[key]!r} but the run in "
                                 f"'{run_dir}' has {ours[key]!r}: resume without --config (the "
                                 f"run's own config is used), or start a new run with another "
                                 f"--out")
    return cfg
