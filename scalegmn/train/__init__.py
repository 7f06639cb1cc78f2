"""Training: configs, the loop, tasks, reports and robustness evaluation."""
from .config import RunConfig, list_configs, load_config
from .loop import Runner

__all__ = ["RunConfig", "Runner", "list_configs", "load_config"]
