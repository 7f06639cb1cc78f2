"""Training: configs, the loop, tasks, reports and robustness evaluation."""
from .config import RunConfig, list_configs, load_config

__all__ = ["RunConfig", "Runner", "list_configs", "load_config"]


def __getattr__(name: str):
    # the loop (and torch with it) is imported on first use: listing configs stays instant
    if name == "Runner":
        from .loop import Runner
        return Runner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
