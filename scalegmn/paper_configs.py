"""The paper's model configurations (shipped YAML files) and their parameter counts.

    python -m scalegmn.paper_configs        # prints the table listed in the README
"""
from __future__ import annotations

from pathlib import Path

import yaml

from .config import ModelConfig
from .registry import build, count_parameters

CONFIG_DIR = Path(__file__).parent / "configs" / "models"


def list_configs() -> list:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load(name: str):
    """(ModelConfig, ArchSpec of the data) for a shipped config name or a YAML path."""
    from .cli import parse_arch
    path = Path(name)
    if not path.is_file():
        path = CONFIG_DIR / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no config {name!r}; shipped: {list_configs()}")
    data = yaml.safe_load(path.read_text())
    return ModelConfig.from_dict(data["model"]), parse_arch(data["arch"])


def table() -> str:
    rows = [f"{'config':<28s} {'backend':<11s} {'task':<12s} {'L':>3s} {'d':>4s} "
            f"{'trainable':>11s}"]
    for name in list_configs():
        cfg, arch = load(name)
        net = build(cfg.backend, cfg.task, spec=arch, config=cfg)
        n = count_parameters(net)["trainable"]
        rows.append(f"{name:<28s} {cfg.backend:<11s} {cfg.task:<12s} {cfg.layers:>3d} "
                    f"{cfg.hidden:>4d} {n:>11,d}")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
