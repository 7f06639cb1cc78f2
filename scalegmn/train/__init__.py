"""Training: configs, the loop, tasks, reports and robustness evaluation."""
from ..lazy import lazy_exports
from .config import RunConfig, list_configs, load_config

__all__ = ["RunConfig", "Runner", "list_configs", "load_config"]

# the loop (and torch with it) is imported on first use: listing configs stays instant
__getattr__, __dir__ = lazy_exports(__name__, {"Runner": ".loop"}, globals())
