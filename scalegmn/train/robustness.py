"""Robustness: a trained model's metric on test sets transformed by random group actions, and
the share of test networks whose prediction the actions change.

A symmetric model's metric is unchanged by actions of the groups it claims; a model that ignores
the symmetry (the flat MLP) degrades, **unless the data set itself is invariant**: SIRENs and
tanh networks trained from a sign-symmetric, i.i.d. initialisation by an elementwise optimiser
are as likely as their permuted and sign-flipped copies, so a transformed test set is another
sample of the same distribution, and every model's expected metric is the same on it (the
difference is sampling noise). ``prediction_changes`` measures what the metric cannot: how many
test networks get a different prediction after the action (0 for a model that respects the
group, to float precision). Positive rescalings of ReLU networks do leave the distribution,
and there the metric itself drops.

Settings: ``none``, ``perm`` (permutations only), ``perm+sign`` (sign flips too: sine/tanh
networks), ``scale r`` (log-uniform factors in ``[1/r, r]`` and permutations: ReLU networks).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

import converters


def settings_for(graphs) -> list:
    groups = {converters.GROUPS[int(g)] for g in graphs[0].group}
    out = [("none", None), ("perm", (1.0, 1.0))]
    if "sign" in groups and "scale" not in groups:
        out = [("none", None), ("perm", "perm"), ("perm+sign", (1.0, 1.0))]
    if "scale" in groups or "linear" in groups:
        out = [("none", None)] + [(f"scale {r:g}", (1.0 / r, float(r)))
                                  for r in (1, 10, 100, 1000)]
    return out


def _transform(rng, seed):
    gen = torch.Generator().manual_seed(seed)

    def apply(batch):
        if rng == "perm":
            a = converters.sample_action(batch, gen, (1.0, 1.0))
            a = converters.Action(a.perm, torch.ones_like(a.q))
        else:
            a = converters.sample_action(batch, gen, rng)
        return a.apply(batch)
    return apply


def robustness(runner, seed=0) -> dict:
    """``{setting: test metric}`` for the runner's model on transformed test sets."""
    test = runner.data["test"]
    out = {}
    for name, rng in settings_for(test):
        res = runner.evaluate(test, None if rng is None else _transform(rng, seed),
                              desc=f"robustness: {name}")
        out[name] = res[runner.task.metric]
    return out


#: a real-valued prediction "changes" when it moves by more than this times the standard deviation
#: of the untransformed predictions over the test set (float32 round-off of a symmetric model is
#: about 1e-6 of it; a model that ignores the group moves by 1e-2 to 1)
CHANGE_TOLERANCE = 1e-3


def predictions(runner, graphs, transform=None, desc: str = "evaluating") -> torch.Tensor:
    """``Task.predictions`` of the runner's model on ``graphs`` (``transform`` applied to each
    batch first), concatenated in order: (len(graphs), ...)."""
    outs, bs = runner.outputs(graphs, transform, desc=desc)
    return torch.cat([runner.task.predictions(o, b) for o, b in zip(outs, bs)])


def change_sizes(base: torch.Tensor, moved: torch.Tensor) -> torch.Tensor:
    """(B,) float64: how far each network's prediction moved from ``base`` to ``moved``: the
    largest absolute change of its entries (an image: of any pixel); 1 where a class differs."""
    if not torch.is_floating_point(base):
        return (moved != base).reshape(len(base), -1).any(1).double()
    return (moved - base).double().abs().reshape(len(base), -1).amax(1)


def change_tolerance(base: torch.Tensor) -> float:
    """The change size above which a prediction counts as changed: 0 for classes,
    ``CHANGE_TOLERANCE`` times the standard deviation of the real-valued ``base``."""
    if not torch.is_floating_point(base):
        return 0.0
    return CHANGE_TOLERANCE * float(base.double().std())


def prediction_changes(runner, seed: int = 0) -> dict:
    """``{setting: share of test networks whose prediction changes}`` for every setting of
    ``settings_for`` but ``none``, under the same random actions as ``robustness(runner, seed)``.

    A prediction is ``Task.predictions`` (the class, the predicted accuracy, the edited image);
    a class changes when it differs, a real value (an image: any pixel) when it moves by more
    than ``CHANGE_TOLERANCE`` times the standard deviation of the untransformed predictions.
    Invariant for a model that respects the group: 0.0 whatever the data."""
    test = runner.data["test"]
    base = predictions(runner, test)
    tol = change_tolerance(base)
    out = {}
    for name, rng in settings_for(test):
        if rng is None:
            continue
        moved = predictions(runner, test, _transform(rng, seed), f"prediction changes: {name}")
        out[name] = float((change_sizes(base, moved) > tol).double().mean())
    return out


def chance_level(runner):
    """``1 / number of classes`` when the runner's metric is accuracy, else ``None``."""
    if runner.task.metric != "accuracy":
        return None
    k = runner.task.out_dim(runner.data["train"])
    return 1.0 / k if k > 1 else None


def figure(results: dict, metric: str, chance=None):
    """The robustness bar plot as a matplotlib figure: one group of bars per setting, one bar per
    backend, a dotted chance line at ``chance`` (e.g. ``1 / classes``), the legend beside the
    axes (never over a bar)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    backends = list(results)
    settings = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(3.5 + 1.3 * len(settings), 3.2))
    w = 0.8 / len(backends)
    for i, b in enumerate(backends):
        ax.bar([s + i * w for s in range(len(settings))], [results[b][k] for k in settings],
               width=w, label=b)
    ax.set_xticks([s + 0.4 - w / 2 for s in range(len(settings))], settings)
    if chance is not None:
        k = round(1 / chance)
        ax.axhline(chance, color="0.3", ls=":", lw=1.2,
                   label=f"chance (1/{k})" if abs(k * chance - 1) < 1e-9 else "chance")
    if metric == "accuracy":
        ax.set_ylim(0, 1)
    ax.set_xlabel("random group action applied to the test networks")
    ax.set_ylabel(f"test {metric}")
    ax.set_title(f"test {metric} under random group actions of the test networks", fontsize=10)
    handles, labels = ax.get_legend_handles_labels()     # backends first, then chance
    order = sorted(range(len(labels)), key=lambda i: labels[i] not in results)
    ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig


def plot(results: dict, metric: str, path, chance=None):
    """Write ``figure(results, metric, chance)`` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt
    fig = figure(results, metric, chance)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def save(results: dict, path):
    Path(path).write_text(json.dumps(results, indent=1))
