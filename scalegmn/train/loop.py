"""One training and evaluation loop for every task and backend.

Run directory: ``config.yaml`` (resolved), ``metrics.jsonl`` (one JSON object per evaluation),
``checkpoints/last.pt`` and ``best.pt`` (written atomically), ``plots/curves.png``,
``summary.json``. ``--resume`` continues from ``last.pt`` with the config saved in it; with the
same seed the final metrics equal an uninterrupted run's (data order and augmentation are seeded
per epoch, RNG states are checkpointed). A resume is checked (config, weights, optimiser state)
before anything in the run directory is written.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import yaml

import converters

from .. import allocator, build, count_parameters
from ..config import execution_of
from converters.io import atomic_save, atomic_write
from .config import (RESUMABLE_KEYS, RunConfig, config_conflicts, flatten_config,
                     upgrade_run_dict)
from .tasks import TASK_CLASSES


def set_seed(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# -- data --------------------------------------------------------------------------------------
def resolve_data_path(cfg: RunConfig, progress=True) -> Path:
    """The run's data folder: ``data.path``, or the built-in data set of its format (made
    first if absent)."""
    if cfg.data.path:
        return Path(cfg.data.path)
    from ..data.defaults import builtin_data
    return builtin_data(cfg.data.format, cfg.data.default_size, progress)


def load_splits(cfg: RunConfig, progress=True, log=None) -> dict:
    """{split: list of graphs (in memory)}; editing targets attached as ``graph.target``.
    ``log`` (e.g. ``print``) is told which folder and index file were read."""
    from ..data import load_dataset
    path = resolve_data_path(cfg, progress)
    targets = None
    out = {}
    for split in ("train", "val", "test"):
        ds = load_dataset(path, cfg.data.format, split, **cfg.data.options)
        if log is not None and split == "train":
            log(f"data: {getattr(ds, 'source', '') or path}")
        if cfg.task == "inr_editing" and targets is None and ds.items:
            source = ds.images_file(path)
            targets = _editing_targets(source, cfg.data.editing)
            if log is not None:
                log(f"editing targets: {cfg.data.editing} of the images in '{source}'")
        n = len(ds) if cfg.data.limit is None else min(len(ds), cfg.data.limit)
        out[split] = [ds[i] for i in range(n)]
        if targets is not None:       # each item records its image (set by its loader)
            for i, g in enumerate(out[split]):
                g.target = torch.tensor(targets[ds.image(i)], dtype=torch.float32).unsqueeze(0)
    return out


def _editing_targets(images_file, kind):
    """Editing targets of every source image in ``images_file``."""
    from ..data.generate import editing_targets
    return editing_targets(np.load(images_file)["images"], kind)


def batches(graphs, batch_size, order=None, rank=0, world=1):
    """Batches in ``order``; with ``world > 1`` this rank's share of each global batch."""
    idx = list(range(len(graphs))) if order is None else order
    for i in range(0, len(idx), batch_size):
        part = idx[i:i + batch_size][rank::world]
        if part:
            yield converters.batch_graphs([graphs[j] for j in part])


# -- running -------------------------------------------------------------------------------------
def activation_bytes(model, graphs, batch_size: int, dtype=torch.float32, device="cpu"):
    """Bytes a training forward pass of ``batch_size`` networks keeps for the backward pass
    (autograd's saved tensors, parameters excluded, each storage once): counted exactly on a
    batch of ``graphs[:1]`` and of ``graphs[:2]``, extrapolated linearly. Measured against the
    allocation peak of a training step (torch.profiler) at batch 32 on SIREN 2-32-32-1 graphs:
    ScaleGMN hidden 32, 3 layers 264 vs 265 MiB, ScaleGMN-B 505 vs 502 MiB, the flat MLP 0.3 MiB
    vs 1.6 MiB (the rest are its weight gradients). The model's parameters, buffers, mode and the
    RNG states are left as they were; ``None`` if the forward pass fails."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def count(part):
        saved = {}

        def pack(t):
            st = t.untyped_storage()
            if st.data_ptr() not in params:
                saved[st.data_ptr()] = st.nbytes()
            return t
        b = converters.batch_graphs(part).to(device)
        b.x, b.edge_attr = b.x.to(dtype), b.edge_attr.to(dtype)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(b)
        del out
        return sum(saved.values())

    graphs = list(graphs)[:2]
    if not graphs:
        return None
    was_training = model.training
    buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
    dev = torch.device(device)
    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    try:
        model.train()
        with torch.random.fork_rng(devices=rng_devices), torch.enable_grad():
            one = count(graphs[:1])
            per_net = count(graphs) - one if len(graphs) == 2 else one
        return max(one + per_net * (batch_size - 1), 0)
    except Exception:      # noqa: BLE001 - an estimate must not stop a run
        return None
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in buffers and v.shape == buffers[k].shape:
                    v.copy_(buffers[k])


def malloc_policy(cfg: RunConfig) -> str:
    """The ``scalegmn.allocator`` policy of a run: ``train.malloc``, where ``auto`` means
    ``lean`` for the memory-lean mode (``model.checkpoint``) and ``keep`` (fast) otherwise."""
    return allocator.resolve(cfg.train.malloc, execution_of(cfg.model).checkpoint)


class Runner:
    """One training run: ``fit()`` trains, validates, checkpoints and tests (module docstring).

    Construction prepares everything, one step per method: the process (``_set_up_process``),
    the data (``_load_data``), the model (``_build_model``), data parallelism
    (``_distribute``), the optimiser and its schedule (``_optimisation``), and, unless
    ``dry_run``, the run directory with a checked resume (``_open_run_dir``).
    """

    def __init__(self, cfg: RunConfig, out_dir, resume: bool = False, dry_run: bool = False,
                 log=print):
        cfg = copy.deepcopy(cfg)      # the inferred out_dim is written into it
        self.cfg, self.out, self.log = cfg, Path(out_dir), log
        self._set_up_process()
        self.task = TASK_CLASSES[cfg.task]()
        example = self._load_data()
        self.model = self._build_model(example)
        self.train_model = self._distribute()
        self.opt, self.sched = self._optimisation()
        self.start_epoch, self.best, self.step = 0, None, 0
        self.summary_text = self._summary(example)
        self.log(self.summary_text)
        if not dry_run:
            self._open_run_dir(resume)

    # construction, one job each ---------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path) -> "Runner":
        """The runner of a checkpoint of ``scalegmn train`` (``checkpoints/best.pt`` or
        ``last.pt``): its config's data and model, with the checkpoint's weights, ready to
        ``evaluate`` (nothing is trained or written). Clear errors for a missing, unreadable or
        foreign file and for weights that do not fit the config's model."""
        from .config import _build, _with_model_task
        path = Path(path)
        hint = "pass a run's checkpoints/best.pt or checkpoints/last.pt (written by scalegmn train)"
        if not path.is_file():
            near = [str(q) for q in (path / "checkpoints" / "best.pt", path / "best.pt")
                    if q.is_file()]
            raise FileNotFoundError(f"no checkpoint file '{path}': "
                                    + (f"did you mean --checkpoint {near[0]}?" if near else hint))
        try:
            ckpt = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as e:     # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"cannot read checkpoint '{path}' ({type(e).__name__}): {hint}") from e
        if not (isinstance(ckpt, dict) and isinstance(ckpt.get("config"), dict)
                and isinstance(ckpt.get("model"), dict)):
            raise ValueError(f"'{path}' is not a checkpoint of scalegmn train (it has no config "
                             f"and model): {hint}")
        cfg = _build(RunConfig, _with_model_task(upgrade_run_dict(ckpt["config"])), "config")
        runner = cls(cfg, path.parent.parent, dry_run=True, log=lambda *_: None)
        try:
            runner.model.load_state_dict(ckpt["model"])
        except RuntimeError as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
            raise ValueError(f"checkpoint '{path}' does not fit the model of its own config "
                             f"({lines[1] if len(lines) > 1 else lines[0]})") from e
        return runner

    def _set_up_process(self):
        """Rank and world size (under torchrun only rank 0 logs and writes), the allocator
        policy, threads and determinism, dtype and device, and the seeds."""
        cfg = self.cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and self.rank != 0:
            self.log = (lambda *a, **k: None)
        allocator.apply(malloc_policy(cfg))
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        if cfg.train.deterministic:   # parallel CPU reductions differ run to run (~1e-7)
            torch.set_num_threads(1)
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.dtype = getattr(torch, cfg.train.dtype)
        self.device = torch.device(cfg.train.device)
        set_seed(cfg.train.seed)

    def _load_data(self):
        """``self.data`` ({split: graphs}); returns an example batch of the first two training
        networks (what the model is built for)."""
        self.data = load_splits(self.cfg, self.cfg.train.progress, self.log)
        if not self.data["train"]:
            raise ValueError("the training split is empty")
        return converters.batch_graphs(self.data["train"][:2])

    def _build_model(self, example) -> torch.nn.Module:
        """The backend's model for ``example``, on the run's device and dtype. ``model.out_dim``
        null means "from the data": the value found is written into the config (saved with the
        run); a value that disagrees with the data, or a ``model.task`` the run's task does not
        train, is refused."""
        cfg = self.cfg
        if cfg.model.task != self.task.model_task:
            raise ValueError(f"model.task is {cfg.model.task!r} but task {self.task.name} "
                             f"trains an {self.task.model_task} model: set "
                             f"model.task={self.task.model_task} (or leave it out)")
        if self.task.model_task == "invariant":
            found = self.task.out_dim(self.data["train"])
            if cfg.model.out_dim is None:
                cfg.model = dataclasses.replace(cfg.model, out_dim=found)
            elif cfg.model.out_dim != found:
                raise ValueError(f"model.out_dim is {cfg.model.out_dim} but the training data "
                                 f"need {found} outputs: set model.out_dim={found} or null "
                                 f"(from the data)")
        model = build(spec=example, config=cfg.model)
        return model.to(self.device, self.dtype)

    def _distribute(self) -> torch.nn.Module:
        """The module the training step calls: the model itself, or under torchrun the model in
        DistributedDataParallel (every rank sees the same global batch order and takes its
        share; the gradients are averaged, gloo on CPU)."""
        if self.world == 1:
            return self.model
        import torch.distributed as dist
        if not dist.is_initialized():
            dist.init_process_group("gloo" if self.device.type == "cpu" else "nccl")
        wrapped = torch.nn.parallel.DistributedDataParallel(self.model,
                                                            find_unused_parameters=True)
        bs = self.cfg.data.batch_size
        if bs % self.world:
            raise ValueError(f"config key 'data.batch_size' ({bs}) must be divisible by the "
                             f"{self.world} processes")
        return wrapped

    def _optimisation(self):
        """``(optimiser, schedule)``: AdamW and a linear warm-up over ``train.warmup_steps``."""
        t = self.cfg.train
        opt = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
        w = max(t.warmup_steps, 1)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / w))

    def _open_run_dir(self, resume: bool):
        """Resume from ``checkpoints/last.pt`` if asked (checked completely before anything in
        the run directory is written), then create the directory, write the resolved
        ``config.yaml`` and drop metrics rows past the resumed epoch (rank 0)."""
        last = self.out / "checkpoints" / "last.pt"
        if resume and last.exists():
            self._load(last)
            self.log(f"resumed from epoch {self.start_epoch}")
        elif resume:
            self.log(f"nothing to resume in {self.out} (no checkpoints/last.pt): starting fresh")
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "checkpoints").mkdir(exist_ok=True)
        if self.rank == 0:
            cfg = self.cfg.to_dict()
            atomic_write(self.out / "config.yaml",
                         lambda fh: fh.write(yaml.safe_dump(cfg, sort_keys=False)), mode="w")
            self._trim_metrics()

    def _summary(self, example):
        g = self.data["train"][0]
        n = count_parameters(self.model)["trainable"]
        bs = self.cfg.data.batch_size
        est = None
        if not execution_of(self.cfg.model).compile:      # a compiled model would compile here
            est = activation_bytes(self.model, self.data["train"][:2], bs, self.dtype,
                                   self.device)
        memory = ("" if est is None else
                  f"; ~{est / 2**20:.{0 if est >= 10 * 2**20 else 1}f} MiB of activations per "
                  f"batch of {bs} (counted on a batch of 2, scaled)")
        return (f"task {self.task.name} | data {self.cfg.data.format}: "
                f"{len(self.data['train'])}/{len(self.data['val'])}/{len(self.data['test'])} "
                f"train/val/test networks of {g.num_nodes} nodes, {g.num_edges} edges\n"
                f"model {self.cfg.model.backend}: {n:,} trainable parameters{memory}")

    # checkpoints --------------------------------------------------------------------------
    def _state(self, epoch):
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(), "epoch": epoch, "best": self.best,
                "step": self.step, "torch_rng": torch.get_rng_state(),
                "py_rng": random.getstate(), "np_rng": np.random.get_state(),
                "config": self.cfg.to_dict()}

    def _load(self, path):
        """Restore a checkpoint; ``ValueError`` naming the culprit (a config key that differs
        from the checkpoint's, a file that does not fit the model) before anything changes."""
        try:
            st = torch.load(path, weights_only=False, map_location="cpu")
        except Exception as e:     # noqa: BLE001 - any unreadable file gets the same message
            raise ValueError(f"cannot read checkpoint '{path}' ({type(e).__name__}: {e})") from e
        saved = upgrade_run_dict(copy.deepcopy(st.get("config") or {}))
        if saved.get("model", {}).get("out_dim", 0) is None:   # saved before out_dim was kept
            saved["model"]["out_dim"] = self.cfg.model.out_dim
        conflicts = config_conflicts(self.cfg.to_dict(), saved) if saved else []
        # keys the checkpoint predates (options added since) take their defaults, which keep the
        # old model (a model that differs would not load the checkpoint's weights below)
        known = set(flatten_config(saved))
        conflicts = [c for c in conflicts if c[0] in known or c[0].split(".")[0] not in saved]
        if conflicts:
            key, ours, theirs = conflicts[0]
            raise ValueError(f"cannot resume from '{path}': config key '{key}' is {ours!r} here "
                             f"but {theirs!r} in the checkpoint (a resumed run may change only "
                             f"{', '.join(RESUMABLE_KEYS)}); resume with the run's own config "
                             f"(scalegmn train --out {self.out} --resume) or use another --out")
        try:
            self.model.load_state_dict(st["model"])
            self.opt.load_state_dict(st["opt"])
            self.sched.load_state_dict(st["sched"])
        except (KeyError, RuntimeError, ValueError) as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [repr(e)]
            if len(lines) > 1 and lines[0].endswith(":"):   # "Error(s) in loading state_dict"
                lines = lines[1:]
            more = f"; {len(lines) - 1} more like it" if len(lines) > 1 else ""
            raise ValueError(f"checkpoint '{path}' does not fit the model built from the config "
                             f"({lines[0]}{more})") from e
        self.start_epoch, self.best, self.step = st["epoch"], st["best"], st["step"]
        torch.set_rng_state(st["torch_rng"])
        random.setstate(st["py_rng"])
        np.random.set_state(st["np_rng"])

    def _trim_metrics(self):
        f = self.out / "metrics.jsonl"
        if f.exists():
            keep = [ln for ln in f.read_text().splitlines()
                    if ln.strip() and json.loads(ln)["epoch"] <= self.start_epoch]
            atomic_write(f, lambda fh: fh.write("".join(ln + "\n" for ln in keep)), mode="w")

    # loop ---------------------------------------------------------------------------------
    def evaluate(self, graphs, transform=None, desc: str = "evaluating",
                 reference: bool = False):
        """The task's metrics on ``graphs`` (a progress bar ``desc`` when the step is long);
        ``reference``: of the task's trivial model instead (``Task.reference_output``)."""
        return self.task.evaluate(*self.outputs(graphs, transform, desc, reference))

    def outputs(self, graphs, transform=None, desc: str = "evaluating",
                reference: bool = False) -> tuple:
        """``(outputs, batches)``: the model's output on each batch of ``graphs`` (in order,
        ``data.batch_size`` networks each, ``transform`` applied to each batch first), and the
        batches it read."""
        from ..progress import bar as progress_bar
        self.model.eval()
        outs, bs = [], []
        bar = progress_bar(math.ceil(len(graphs) / self.cfg.data.batch_size), desc, "batch",
                           enabled=self.cfg.train.progress and self.rank == 0, leave=False,
                           quiet=True)
        with torch.no_grad():
            for b in batches(graphs, self.cfg.data.batch_size):
                if transform is not None:
                    b = transform(b)
                b = b.to(self.device)
                b.x, b.edge_attr = b.x.to(self.dtype), b.edge_attr.to(self.dtype)
                outs.append(self.task.reference_output(b) if reference else self.model(b))
                bs.append(b)
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()
        return outs, bs

    def fit(self):
        cfg = self.cfg
        train = self.data["train"]
        metric = self.task.metric
        better = (lambda a, b: a > b) if self.task.higher_is_better else (lambda a, b: a < b)
        from ..progress import bar as progress_bar, duration
        t_start = time.perf_counter()
        for epoch in range(self.start_epoch, cfg.train.epochs):
            self.model.train()
            gen = torch.Generator().manual_seed(cfg.train.seed * 100_003 + epoch)
            order = torch.randperm(len(train), generator=gen).tolist()
            aug = None
            if cfg.data.augment:
                from ..data.transforms import RandomAction
                aug = RandomAction(generator=gen)
            n_batches = math.ceil(len(train) / cfg.data.batch_size)
            bar = progress_bar(n_batches, f"epoch {epoch + 1}/{cfg.train.epochs}", "batch",
                               enabled=cfg.train.progress and self.rank == 0, leave=False)
            t0, total, seen = time.perf_counter(), 0.0, 0
            for b in batches(train, cfg.data.batch_size, order, self.rank, self.world):
                if aug is not None:
                    b = aug(b)
                b = b.to(self.device)
                b.x, b.edge_attr = b.x.to(self.dtype), b.edge_attr.to(self.dtype)
                self.opt.zero_grad(set_to_none=True)
                loss = self.task.loss(self.train_model(b), b)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.train.clip)
                self.opt.step()
                self.sched.step()
                self.step += 1
                n = b.num_graphs
                total, seen = total + loss.item() * n, seen + n
                if bar is not None:
                    bar.set_postfix(loss=f"{total / seen:.4f}",    # shown at the next update
                                    nets_per_s=f"{seen / (time.perf_counter() - t0):.0f}",
                                    refresh=False)
                    bar.update(1)
            if bar is not None:
                bar.close()
            row = {"epoch": epoch + 1, "step": self.step, "train_loss": total / max(seen, 1),
                   "seconds": time.perf_counter() - t0}
            if (epoch + 1) % cfg.train.eval_every == 0 or epoch + 1 == cfg.train.epochs:
                val = self.evaluate(self.data["val"], desc="validating") \
                    if self.data["val"] else {}
                row.update({f"val_{k}": v for k, v in val.items()})
                score = val.get(metric)
                if score is not None and (self.best is None or better(score, self.best)):
                    self.best = score
                    if self.rank == 0:
                        atomic_save(self._state(epoch + 1),
                                    self.out / "checkpoints" / "best.pt")
            else:
                score = None
            # rate and ETA in the log too (a log file shows no progress bar in place)
            done = epoch + 1 - self.start_epoch
            per_epoch = (time.perf_counter() - t_start) / done
            left = cfg.train.epochs - epoch - 1
            self.log(f"epoch {epoch + 1}/{cfg.train.epochs}: train loss {row['train_loss']:.4f}"
                     + (f", val {metric} {score:.4f}" if score is not None else "")
                     + f" ({duration(row['seconds'])}, {seen / max(row['seconds'], 1e-9):.1f} "
                       f"nets/s" + (f"; about {duration(per_epoch * left)} left)" if left
                                    else ")"))
            if self.rank == 0:
                with open(self.out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                atomic_save(self._state(epoch + 1), self.out / "checkpoints" / "last.pt")
        return self.finish()

    def finish(self):
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()
            if self.rank != 0:
                return None
        best = self.out / "checkpoints" / "best.pt"
        if best.exists():
            self.model.load_state_dict(torch.load(best, weights_only=False)["model"])
        test = self.evaluate(self.data["test"], desc="testing")
        summary = {"task": self.task.name, "backend": self.cfg.model.backend,
                   "seed": self.cfg.train.seed, "metric": self.task.metric,
                   "best_val": self.best, "test": test,
                   "parameters": count_parameters(self.model)["trainable"]}
        if self.task.reference_name:   # e.g. editing: the test MSE of the unedited networks
            summary["reference"] = {"name": self.task.reference_name, "test": self.evaluate(
                self.data["test"], desc="reference", reference=True)}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
        plot_curves(self.out)
        self.log(f"test {self.task.metric}: {test[self.task.metric]:.4f} "
                 f"(best validation {self.task.metric} {self.best})")
        return summary


def run_title(run_dir) -> str:
    """``'RUN: BACKEND (hidden H, L layers), TASK on FORMAT'`` from the run's ``config.yaml``
    (the run's folder name alone when there is none)."""
    run_dir = Path(run_dir)
    name = run_dir.resolve().name
    f = run_dir / "config.yaml"
    if not f.exists():
        return name
    cfg = yaml.safe_load(f.read_text()) or {}
    model, data = cfg.get("model", {}), cfg.get("data", {})
    size = ", ".join(x for x in (f"hidden {model['hidden']}" if "hidden" in model else "",
                                 f"{model['layers']} layers" if "layers" in model else "") if x)
    return (f"{name}: {model.get('backend', '?')}" + (f" ({size})" if size else "")
            + f", {cfg.get('task', '?')} on {data.get('format', '?')}")


def curves_figure(run_dir):
    """The learning curves of a run (train loss; each validation metric) as a matplotlib
    figure titled with the run and its model (``run_title``); ``None`` before any epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    run_dir = Path(run_dir)
    rows = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()
            if ln.strip()]
    if not rows:
        return None
    vals = sorted({k for r in rows for k in r if k.startswith("val_")})
    fig, axes = plt.subplots(1, 1 + len(vals), figsize=(max(7, 4 * (1 + len(vals))), 3.3))
    axes = np.atleast_1d(axes)
    ep = [r["epoch"] for r in rows]
    axes[0].plot(ep, [r["train_loss"] for r in rows], marker="o")
    axes[0].set_title("train loss")
    for ax, k in zip(axes[1:], vals):
        pts = [(r["epoch"], r[k]) for r in rows if k in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color="C1")
        ax.set_title(k.replace("_", " "))
    from matplotlib.ticker import MaxNLocator
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(run_title(run_dir), fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(run_dir):
    """Write ``curves_figure(run_dir)`` to ``RUN/plots/curves.png``; its path, or ``None``."""
    import matplotlib.pyplot as plt
    run_dir = Path(run_dir)
    fig = curves_figure(run_dir)
    if fig is None:
        return None
    (run_dir / "plots").mkdir(exist_ok=True)
    path = run_dir / "plots" / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
