"""Generate a small CNN zoo locally, in the Small CNN Zoo format (Unterthiner et al. 2020).

Every network is the zoo CNN (``converters.models.cnn_zoo``: three 3x3 stride-2 valid
convolutions with 16 channels, an activation and dropout after each, global average pooling, a
10-way linear layer; 4,970 parameters), trained on real images with its own hyperparameters.

Many networks train at once: the networks of a chunk that share an activation form one grouped
network (``groups=G``, channels-last memory), network ``g`` reading input channel ``g``, so every
network sees its own minibatch. The loss is the sum over networks of each network's loss and the
optimizers are written by hand on per-network parameter tensors (leading dimension ``G``) with
per-network learning rates, so each network trains as if alone. Everything random about a
network (hyperparameters, initialisation, training subset, minibatch order, dropout masks) is
seeded by ``(seed, index)`` only, so a network's result does not depend on which networks share
its chunk (up to floating-point rounding of the batched kernels, about 1e-7 here).

Resumption follows ``generate.fit_and_write``: chunks have fixed boundaries, each finished chunk
is written atomically to ``out/zoo_gen_work/chunk_{k}.npz`` and only then appended to the log
``out/zoo_gen_work/log.csv``; a rerun trains only missing chunks, and a killed run, resumed, gives
files identical to an uninterrupted one (same machine and thread count). The work folder can be
deleted once the zoo is assembled.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from converters.io import atomic_write
from converters.models import make_activation

from .zoo import METRIC_COLUMNS, state_dict_to_row, write_zoo

#: the label of the final checkpoint (the released zoo's last epoch; the loader keeps it)
FINAL_STEP = 86
OPTIMIZERS = ("sgd", "momentum", "adam")
TRAIN_FRACTIONS = (0.1, 0.25, 0.5, 1.0)
CHANNELS, N_CLASSES, KERNEL, STRIDE = 16, 10, 3, 2
MOMENTUM, BETA1, BETA2, ADAM_EPS = 0.9, 0.9, 0.999, 1e-7
WORK_DIR = "zoo_gen_work"
_LOG_FIELDS = ["chunk", "first", "last", "kept", "dropped", "seconds", "mean_test_accuracy"]
_STREAMS = {"hparams": 0, "init": 1, "data": 2, "dropout": 3}


# -- per-network randomness ------------------------------------------------------------------------
def _seed_seq(seed: int, index: int, stream: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(seed), int(index), _STREAMS[stream]])


def _torch_gen(seed, index, stream) -> torch.Generator:
    state = _seed_seq(seed, index, stream).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)


def sample_hparams(index: int, seed: int = 0, activations=("relu", "tanh")) -> dict:
    """The hyperparameters of network ``index`` (a function of ``(seed, index)`` only).

    activation: ``activations[index % len(activations)]`` (alternating, so a zoo is balanced);
    optimizer: uniform over sgd / momentum (0.9) / adam; learning rate 10^U(-3.5, -1.5) for
    sgd and momentum, 10^U(-4, -2.5) for adam; init std 10^U(-2, -0.3) (normal kernels, zero
    biases); dropout U(0, 0.5) after each conv; L2 (on kernels) 10^U(-8, -2); train fraction in
    {0.1, 0.25, 0.5, 1.0}."""
    rng = np.random.default_rng(_seed_seq(seed, index, "hparams"))
    opt = OPTIMIZERS[int(rng.integers(len(OPTIMIZERS)))]
    lo, hi = (-4.0, -2.5) if opt == "adam" else (-3.5, -1.5)
    return {"activation": activations[index % len(activations)], "optimizer": opt,
            "learning_rate": float(10 ** rng.uniform(lo, hi)),
            "init_std": float(10 ** rng.uniform(-2.0, -0.3)),
            "dropout": float(rng.uniform(0.0, 0.5)),
            "l2reg": float(10 ** rng.uniform(-8.0, -2.0)),
            "train_fraction": float(TRAIN_FRACTIONS[int(rng.integers(len(TRAIN_FRACTIONS)))])}


def _batch_order(index, seed, n_train, fraction, steps, batch_size) -> np.ndarray:
    """(steps, batch_size) training indices of one network: a fixed random subset of
    ``fraction`` of the training set, visited in a fresh random order every epoch."""
    rng = np.random.default_rng(_seed_seq(seed, index, "data"))
    subset = rng.permutation(n_train)[:max(1, int(round(fraction * n_train)))]
    need, parts = steps * batch_size, []
    while sum(len(p) for p in parts) < need:
        parts.append(subset[rng.permutation(len(subset))])
    return np.concatenate(parts)[:need].reshape(steps, batch_size) if need else \
        np.zeros((0, batch_size), np.int64)


# -- the grouped network -----------------------------------------------------------------------
def _spatial(size: int) -> list:
    out = []
    for _ in range(3):
        size = (size - KERNEL) // STRIDE + 1
        out.append(size)
    return out


def _init_params(indices, hps, seed) -> list:
    """[W1 (G,16,1,3,3), b1 (G,16), W2 (G,16,16,3,3), b2, W3, b3, W4 (G,10,16), b4 (G,10)]."""
    shapes = [(CHANNELS, 1, KERNEL, KERNEL), (CHANNELS, CHANNELS, KERNEL, KERNEL),
              (CHANNELS, CHANNELS, KERNEL, KERNEL), (N_CLASSES, CHANNELS)]
    per_net = []
    for i, hp in zip(indices, hps):
        g = _torch_gen(seed, i, "init")
        ps = []
        for shape in shapes:
            ps.append(torch.randn(shape, generator=g) * hp["init_std"])
            ps.append(torch.zeros(shape[0]))
        per_net.append(ps)
    return [torch.stack([p[k] for p in per_net]).contiguous() for k in range(8)]


def _forward(params, x, act, drop=None):
    """Logits (B, G, 10) of G networks with activation ``act``; ``x``: (B, G, H, W), channel g
    for network g; ``drop``: per-layer multiplicative masks (B, 16 G, h, w), or None (eval)."""
    B, G = x.shape[:2]
    h = x
    for l in range(3):
        W, b = params[2 * l], params[2 * l + 1]
        h = F.conv2d(h, W.reshape(G * CHANNELS, W.shape[2], KERNEL, KERNEL), b.reshape(-1),
                     stride=STRIDE, groups=G)
        h = act(h)
        if drop is not None:
            h = h * drop[l]
    pooled = h.mean(dim=(2, 3)).view(B, G, CHANNELS)
    return torch.einsum("bgc,goc->bgo", pooled, params[6]) + params[7]


def _as_input(x_gbhw):
    """(G, B, H, W) -> (B, G, H, W) in channels-last memory (faster grouped convolutions)."""
    return x_gbhw.permute(1, 2, 3, 0).contiguous().permute(0, 3, 1, 2)


@torch.no_grad()
def _evaluate(params, act, x, y, chunk=256):
    """Accuracy and mean cross-entropy (G,) of every network on images x (N, H, W), labels y."""
    G = params[0].shape[0]
    correct = torch.zeros(G, dtype=torch.float64)
    loss = torch.zeros(G, dtype=torch.float64)
    for s in range(0, len(x), chunk):
        xb, yb = x[s:s + chunk], y[s:s + chunk]
        logits = _forward(params, _as_input(xb.unsqueeze(0).expand(G, -1, -1, -1)), act)
        yy = yb.unsqueeze(1).expand(-1, G)
        correct += (logits.argmax(-1) == yy).sum(0).double()
        loss += F.cross_entropy(logits.reshape(-1, N_CLASSES), yy.reshape(-1),
                                reduction="none").view(-1, G).sum(0).double()
    n = max(1, len(x))
    return (correct / n).tolist(), (loss / n).tolist()


def _state_dict(params, g) -> dict:
    keys = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "8.weight",
            "8.bias"]
    return {k: p[g].detach().clone() for k, p in zip(keys, params)}


def _preprocess(images) -> torch.Tensor:
    """uint8-range images (N, H, W) -> float32 in [-1, 1] (x / 255 * 2 - 1, as the zoo)."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    return x / 255.0 * 2.0 - 1.0


def _check_images(images, labels, what):
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim != 3:
        raise ValueError(f"{what} images must be (N, H, W) greyscale, got shape {images.shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"{what} labels must have shape ({len(images)},), got {labels.shape}")
    if len(images) and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise ValueError(f"{what} labels must lie in 0..{N_CLASSES - 1}")
    if min(_spatial(min(images.shape[1:]))) < 1:
        raise ValueError(f"{what} images of size {images.shape[1:]} are too small for three "
                         f"3x3 stride-2 valid convolutions: upsample to at least 15x15 "
                         f"(e.g. 8x8 digits to 16x16)")
    return images, labels.astype(np.int64)


def _train_eval_subset(n_train, seed, max_eval):
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7E57]))
    return np.sort(rng.permutation(n_train)[:min(n_train, max_eval)])


def train_nets(indices, images, labels, test_images, test_labels, *, steps=150,
               batch_size=128, seed=0, activations=("relu", "tanh"), checkpoint_steps=None,
               max_eval=2000, num_threads=None) -> list:
    """Train the networks ``indices`` together and evaluate them.

    Networks sharing an activation train as one grouped network (one per activation, one after
    the other). Returns one dict per network, in the order of ``indices``: ``index``,
    ``hparams`` (``sample_hparams``), ``diverged_at`` (the update at which its loss or weights
    became NaN/inf, else None) and ``checkpoints``: ``[(step label, PyTorch state dict of
    converters.models.cnn_zoo, metrics {test_accuracy, test_loss, train_accuracy,
    train_loss})]`` sorted by label, the last one labelled 86. ``checkpoint_steps`` are labels
    in the zoo's epoch units, 0 <= label < 86: the snapshot labelled c is taken after
    ``round(c * steps / 86)`` updates. A diverged network is frozen at zeros (so it cannot
    disturb the others) and returns no checkpoints. ``num_threads``: torch's intra-op threads
    during the call (restored after; None keeps the current setting).
    """
    with _threads(num_threads):
        return _train_nets(indices, images, labels, test_images, test_labels, steps=steps,
                           batch_size=batch_size, seed=seed, activations=activations,
                           checkpoint_steps=checkpoint_steps, max_eval=max_eval)


@contextlib.contextmanager
def _threads(n):
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if n is not None:
            torch.set_num_threads(old)


def _train_nets(indices, images, labels, test_images, test_labels, *, steps, batch_size, seed,
                activations, checkpoint_steps, max_eval):
    indices = [int(i) for i in indices]
    images, labels = _check_images(images, labels, "training")
    test_images, test_labels = _check_images(test_images, test_labels, "test")
    labels_ckpt = sorted(set(int(c) for c in (checkpoint_steps or ())))
    if any(not 0 <= c < FINAL_STEP for c in labels_ckpt):
        raise ValueError(f"checkpoint_steps are labels in 0..{FINAL_STEP - 1} (the final "
                         f"checkpoint is always {FINAL_STEP}), got {checkpoint_steps}")
    snap = {}
    for c in labels_ckpt:
        snap.setdefault(int(round(c * steps / FINAL_STEP)), []).append(c)
    snap.setdefault(steps, []).append(FINAL_STEP)
    data = {"x": _preprocess(images), "y": torch.as_tensor(labels),
            "x_test": _preprocess(test_images[:max_eval]),
            "y_test": torch.as_tensor(test_labels[:max_eval])}
    sub = torch.as_tensor(_train_eval_subset(len(images), seed, max_eval))
    data["x_tr_eval"], data["y_tr_eval"] = data["x"][sub], data["y"][sub]
    hps = {i: sample_hparams(i, seed, activations) for i in indices}
    out = {}
    for act in dict.fromkeys(hps[i]["activation"] for i in indices):
        members = [i for i in indices if hps[i]["activation"] == act]
        if members:
            out.update(_train_group(members, [hps[i] for i in members], data, steps=steps,
                                    batch_size=batch_size, seed=seed, snap=snap))
    return [out[i] for i in indices]


def _train_group(indices, hps, data, *, steps, batch_size, seed, snap) -> dict:
    """Train networks that share one activation as one grouped network; see ``train_nets``."""
    G = len(indices)
    act = make_activation(hps[0]["activation"])
    x_train, y_train = data["x"], data["y"]
    order = torch.as_tensor(np.stack([
        _batch_order(i, seed, len(x_train), hp["train_fraction"], steps, batch_size)
        for i, hp in zip(indices, hps)], axis=1))                        # (steps, G, B)
    drop_gens = [_torch_gen(seed, i, "dropout") for i in indices]

    params = [p.requires_grad_(True) for p in _init_params(indices, hps, seed)]
    col = lambda v, p: torch.tensor(v, dtype=torch.float32).view(-1, *([1] * (p.dim() - 1)))
    lr = [col([hp["learning_rate"] for hp in hps], p) for p in params]
    opt_of = lambda name, p: col([hp["optimizer"] == name for hp in hps], p).bool()
    is_sgd = [opt_of("sgd", p) for p in params]
    is_mom = [opt_of("momentum", p) for p in params]
    l2 = torch.tensor([hp["l2reg"] for hp in hps])
    # dropout: per network and layer, uniforms (B, h, w, 16) from the network's own generator
    p_drop = torch.tensor([hp["dropout"] for hp in hps]).view(G, 1, 1, 1, 1)
    keep_scale = 1.0 / (1.0 - p_drop)
    H, W = x_train.shape[1:]
    uniforms = [torch.empty(G, batch_size, h, w, CHANNELS)
                for h, w in zip(_spatial(H), _spatial(W))]
    buf = [torch.zeros_like(p) for p in params]
    m1 = [torch.zeros_like(p) for p in params]
    m2 = [torch.zeros_like(p) for p in params]
    alive = torch.ones(G, dtype=torch.bool)
    diverged_at = [None] * G
    results = [[] for _ in range(G)]

    def snapshot(labels_here):
        with torch.no_grad():
            te_acc, te_loss = _evaluate(params, act, data["x_test"], data["y_test"])
            tr_acc, tr_loss = _evaluate(params, act, data["x_tr_eval"], data["y_tr_eval"])
        for g in range(G):
            if not alive[g]:
                continue
            sd = _state_dict(params, g)
            for c in labels_here:
                results[g].append((c, sd, {"test_accuracy": te_acc[g], "test_loss": te_loss[g],
                                           "train_accuracy": tr_acc[g],
                                           "train_loss": tr_loss[g]}))

    for t in range(steps + 1):
        if t in snap:
            snapshot(snap[t])
        if t == steps:
            break
        idx = order[t]                                                     # (G, B)
        xb = _as_input(x_train[idx])                                       # (B, G, H, W)
        yb = y_train[idx].t()                                              # (B, G)
        drop = []
        for u in uniforms:
            for g in range(G):
                torch.rand(u.shape[1:], generator=drop_gens[g], out=u[g])
            keep = torch.where(u >= p_drop, keep_scale, 0.0)              # (G, B, h, w, 16)
            # -> (B, 16 G, h, w) in channels-last memory, like the activations
            drop.append(keep.permute(1, 2, 3, 0, 4).flatten(3).permute(0, 3, 1, 2))
        logits = _forward(params, xb, act, drop)
        ce = F.cross_entropy(logits.reshape(-1, N_CLASSES), yb.reshape(-1),
                             reduction="none").view(-1, G).mean(0)
        reg = sum((params[k] ** 2).flatten(1).sum(1) for k in (0, 2, 4, 6))
        loss = ce + l2 * reg
        for p in params:
            p.grad = None
        loss.sum().backward()
        with torch.no_grad():
            step = t + 1
            for k, p in enumerate(params):
                gr = p.grad
                buf[k].mul_(MOMENTUM).add_(gr)
                m1[k].mul_(BETA1).add_(gr, alpha=1 - BETA1)
                m2[k].mul_(BETA2).addcmul_(gr, gr, value=1 - BETA2)
                adam = (m1[k] / (1 - BETA1 ** step)) / \
                    ((m2[k] / (1 - BETA2 ** step)).sqrt() + ADAM_EPS)
                upd = torch.where(is_sgd[k], gr, torch.where(is_mom[k], buf[k], adam))
                p.sub_(torch.where(alive.view(lr[k].shape), lr[k] * upd, 0.0))
            ok = torch.isfinite(loss)
            for p in params:
                ok &= torch.isfinite(p).flatten(1).all(1)
            bad = alive & ~ok
            if bad.any():
                for g in bad.nonzero().flatten().tolist():
                    diverged_at[g] = step
                alive &= ok
                for k, p in enumerate(params):
                    dead = (~alive).view(-1, *([1] * (p.dim() - 1)))
                    for tensor in (p, buf[k], m1[k], m2[k]):
                        tensor.masked_fill_(dead, 0.0)
    return {i: {"index": i, "hparams": hp, "diverged_at": d,
                "checkpoints": [] if d is not None else sorted(r, key=lambda c: c[0])}
            for i, hp, d, r in zip(indices, hps, diverged_at, results)}


# -- files -----------------------------------------------------------------------------------------
def _atomic_npz(path: Path, **arrays):
    atomic_write(path, lambda fh: np.savez(fh, **arrays))


def _atomic_text(path: Path, text: str):
    atomic_write(path, lambda fh: fh.write(text), mode="w")


def _read_chunk(path: Path):
    with np.load(path, allow_pickle=False) as z:
        return z["rows"], json.loads(str(z["metrics"])), json.loads(str(z["dropped"]))


def _done_chunks(work: Path) -> set:
    log = work / "log.csv"
    if not log.exists():
        return set()
    with open(log, newline="") as fh:
        return {int(r["chunk"]) for r in csv.DictReader(fh)
                if (work / f"chunk_{int(r['chunk'])}.npz").exists()}


def _fingerprint(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _metric_rows(res: dict, seed: int, dataset_name: str, gap: int) -> list:
    hp = res["hparams"]
    rows = []
    for label, _, m in res["checkpoints"]:
        rows.append({"config.activation": hp["activation"], "config.b_init": "zeros",
                     "config.dataset": dataset_name, "config.dnn_architecture": "cnn",
                     "config.dropout": hp["dropout"], "config.epochs": FINAL_STEP,
                     "config.epochs_between_checkpoints": gap,
                     "config.init_std": hp["init_std"], "config.l2reg": hp["l2reg"],
                     "config.learning_rate": hp["learning_rate"], "config.num_layers": 3,
                     "config.num_units": CHANNELS, "config.optimizer": hp["optimizer"],
                     "config.random_seed": seed, "config.train_fraction": hp["train_fraction"],
                     "config.w_init": "RandomNormal", "modeldir": f"net_{res['index']}",
                     "step": label, **m})
    assert all(set(r) == set(METRIC_COLUMNS) for r in rows)
    return rows


def generate_cnn_zoo(out, images, labels, test_images, test_labels, *, n_nets=64, group=32,
                     steps=150, batch_size=128, seed=0, activations=("relu", "tanh"),
                     checkpoint_steps=None, dataset_name="unnamed", progress=True,
                     stop_after_chunks=None, max_eval=2000, num_threads=None) -> Path:
    """Train ``n_nets`` zoo CNNs on ``images``/``labels`` (uint8 range, (N, H, W), at least
    15x15) and write a zoo folder ``out`` readable by ``scalegmn.data.zoo.cnn_zoo``.

    Networks are trained ``group`` at a time for ``steps`` minibatches of ``batch_size``, with
    per-network hyperparameters from ``sample_hparams(index, seed, activations)``. Test accuracy
    and loss use the first ``max_eval`` test images; train accuracy and loss a seeded subset of
    ``max_eval`` training images (eval mode, no dropout).

    Written: ``weights.npy`` (one row per network and checkpoint, ordered by network then step;
    TF flat order), ``layout.csv``, ``metrics.csv.gz`` (every ``METRIC_COLUMNS`` entry;
    ``config.dataset = dataset_name`` - name the data honestly; ``modeldir = net_{index}``;
    ``step`` = 86 for the final weights, the labels of ``checkpoint_steps`` for intermediate
    ones, see ``train_nets``) and ``zoo_split.csv`` (a permutation of all row indices seeded by
    ``seed``). ``config.epochs`` is 86 by convention; the real training length is recorded in
    ``zoo_gen_work/settings.json``.

    Divergence: a network whose loss or weights become NaN/inf is frozen, recorded and dropped
    (all its checkpoints), with one warning giving the count; ``settings.json`` lists the
    dropped indices. Every written weight is finite.

    Speed: each chunk trains as one grouped network per activation, so ``group`` = 32 with two
    activations gives two grouped networks of 16. Results are bit-identical between runs on the
    same machine with the same thread count; ``num_threads`` sets torch's intra-op threads for
    the call (1 is much faster than 2 on a 2-core machine that is busy with other work).

    Resumable (see the module doc): a rerun with the same arguments trains only the missing
    chunks; a rerun with different settings or data raises ``ValueError``.
    ``stop_after_chunks`` trains at most that many chunks in this call (the zoo files are
    written only once every chunk exists). Returns ``Path(out)``.
    """
    out = Path(out)
    images, labels = _check_images(images, labels, "training")
    test_images, test_labels = _check_images(test_images, test_labels, "test")
    if n_nets < 1 or group < 1 or steps < 0 or batch_size < 1:
        raise ValueError("n_nets, group and batch_size must be positive, steps >= 0")
    activations = tuple(activations)
    for a in activations:
        make_activation(a)     # raises for unknown names
    ckpts = sorted(set(int(c) for c in (checkpoint_steps or ())))
    work = out / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)
    settings = {"n_nets": n_nets, "group": group, "steps": steps, "batch_size": batch_size,
                "seed": seed, "activations": list(activations), "checkpoint_steps": ckpts,
                "dataset_name": dataset_name, "max_eval": max_eval,
                "data": _fingerprint(images, labels, test_images, test_labels),
                "n_train": len(images), "n_test_used": min(len(test_images), max_eval),
                "image_size": list(images.shape[1:])}
    sfile = work / "settings.json"
    if sfile.exists():
        old = json.loads(sfile.read_text())
        old_core = {k: old.get(k) for k in settings}
        if old_core != settings:
            diff = sorted(k for k in settings if old_core[k] != settings[k])
            raise ValueError(f"'{work}' holds chunks generated with other settings "
                             f"({', '.join(diff)} differ): use another folder or delete it")
    else:
        _atomic_text(sfile, json.dumps(settings, indent=1))

    chunks = [list(range(s, min(s + group, n_nets))) for s in range(0, n_nets, group)]
    done = _done_chunks(work)
    todo = [k for k in range(len(chunks)) if k not in done]
    labels_all = ckpts + [FINAL_STEP]
    gap = min(b - a for a, b in zip([0] + labels_all[:-1], labels_all)) if ckpts else FINAL_STEP
    from ..progress import bar as progress_bar
    bar = progress_bar(n_nets, "training zoo CNNs", "net", enabled=progress,
                       initial=sum(len(chunks[k]) for k in done))
    log_path = work / "log.csv"
    new_log = not log_path.exists()
    try:
        with open(log_path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=_LOG_FIELDS)
            if new_log:
                w.writeheader()
            for n_done, k in enumerate(todo):
                if stop_after_chunks is not None and n_done >= stop_after_chunks:
                    break
                t0 = time.perf_counter()
                res = train_nets(chunks[k], images, labels, test_images, test_labels,
                                 steps=steps, batch_size=batch_size, seed=seed,
                                 activations=activations, checkpoint_steps=ckpts,
                                 max_eval=max_eval, num_threads=num_threads)
                rows, metrics = [], []
                for r in res:
                    for _, sd, _ in r["checkpoints"]:
                        rows.append(state_dict_to_row(sd))
                    metrics += _metric_rows(r, seed, dataset_name, gap)
                dropped = [{"index": r["index"], "step": r["diverged_at"]} for r in res
                           if r["diverged_at"] is not None]
                rows = np.stack(rows).astype(np.float32) if rows else \
                    np.zeros((0, 4970), np.float32)
                if not np.isfinite(rows).all():     # cannot happen: diverged nets are dropped
                    raise RuntimeError(f"chunk {k}: non-finite weights")
                _atomic_npz(work / f"chunk_{k}.npz", rows=rows,
                            metrics=np.array(json.dumps(metrics)),
                            dropped=np.array(json.dumps(dropped)))
                final = [m["test_accuracy"] for m in metrics if m["step"] == FINAL_STEP]
                w.writerow({"chunk": k, "first": chunks[k][0], "last": chunks[k][-1],
                            "kept": len(chunks[k]) - len(dropped), "dropped": len(dropped),
                            "seconds": f"{time.perf_counter() - t0:.2f}",
                            "mean_test_accuracy": f"{np.mean(final):.4f}" if final else ""})
                fh.flush()
                os.fsync(fh.fileno())
                if bar is not None:
                    if final:
                        bar.set_postfix(acc=f"{np.mean(final):.3f}", refresh=False)
                    bar.update(len(chunks[k]))
    finally:
        if bar is not None:
            bar.close()
    if len(_done_chunks(work)) < len(chunks):
        return out
    return _assemble(out, work, len(chunks), seed, settings)


def _assemble(out: Path, work: Path, n_chunks: int, seed: int, settings: dict) -> Path:
    rows, metrics, dropped = [], [], []
    for k in range(n_chunks):
        r, m, d = _read_chunk(work / f"chunk_{k}.npz")
        rows.append(r)
        metrics += m
        dropped += d
    rows = np.concatenate(rows)
    if dropped:
        warnings.warn(f"zoo generation: {len(dropped)} of {settings['n_nets']} network(s) "
                      f"diverged (NaN/inf) and were dropped: indices "
                      f"{[d['index'] for d in dropped]}")
    if not len(rows):
        raise RuntimeError("every network diverged; nothing to write")
    split = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5B17])) \
        .permutation(len(rows)).tolist()
    # written next to the chunks, then moved into place file by file (each move atomic)
    tmp = work / "assembling"
    write_zoo(tmp, rows, metrics, split)
    for f in ("weights.npy", "layout.csv", "metrics.csv.gz", "zoo_split.csv"):
        os.replace(tmp / f, out / f)
    tmp.rmdir()
    sfile = work / "settings.json"
    info = json.loads(sfile.read_text())
    info["dropped"] = dropped
    info["rows"] = len(rows)
    _atomic_text(sfile, json.dumps(info, indent=1))
    return out
