"""Generate INR data sets locally, in the public layouts, by fitting many SIRENs at once.

Fitting is batched over networks (chunks of ``chunk``): the loss is the sum over networks of each
network's mean squared error, and Adam is elementwise, so every network trains exactly as if
alone. The gradient is written out by hand (``siren_loss_and_grads``; checked against autograd
on ``torch.nn`` SIRENs in the tests). Each network's initialisation is seeded by its own index,
chunks have fixed boundaries, and a log (CSV) is appended only after a chunk's files are written
atomically: a killed run, resumed, continues where it stopped and gives the same files as an
uninterrupted run.
"""
from __future__ import annotations

import csv
import json
import math
import os
import random
from pathlib import Path

import numpy as np
import torch

from converters.io import atomic_save  # noqa: F401  (re-exported)

from .conventions import DWSNETS, NFN, SirenConvention, coordinates, to_target_range


# -- batched SIRENs ----------------------------------------------------------------------------
def init_sirens(seeds, widths, convention: SirenConvention, init: str, dtype=torch.float32):
    """Per-network parameters [(W (B, out, in), b (B, out)), ...], each net seeded by its seed.

    ``init="dwsnets"``: every sine layer W ~ U(+-sqrt(6/fan_in)/w0), sine biases 0, last layer
    PyTorch's default; ``init="nfn"``: first layer W ~ U(+-1/fan_in), later W ~
    U(+-sqrt(6/fan_in)/w0), biases PyTorch's default U(+-1/sqrt(fan_in))."""
    L = len(widths) - 1
    params = [[] for _ in range(L)]
    for seed in seeds:
        g = torch.Generator().manual_seed(int(seed))
        for l, (fi, fo) in enumerate(zip(widths[:-1], widths[1:])):
            last = l == L - 1
            u = lambda shape, a: (torch.rand(shape, generator=g, dtype=dtype) * 2 - 1) * a
            if init == "dwsnets" and not last:
                W, b = u((fo, fi), math.sqrt(6 / fi) / convention.w0), torch.zeros(fo, dtype=dtype)
            elif init == "nfn" and l == 0:
                W, b = u((fo, fi), 1.0 / fi), u((fo,), 1 / math.sqrt(fi))
            elif init == "nfn" and not last:
                W, b = u((fo, fi), math.sqrt(6 / fi) / convention.w0), u((fo,), 1 / math.sqrt(fi))
            elif init == "nfn":
                W, b = u((fo, fi), math.sqrt(6 / fi) / convention.w0), u((fo,), 1 / math.sqrt(fi))
            else:   # dwsnets last layer: nn.Linear's default
                W, b = u((fo, fi), 1 / math.sqrt(fi)), u((fo,), 1 / math.sqrt(fi))
            params[l].append((W, b))
    return [(torch.stack([p[0] for p in ps]), torch.stack([p[1] for p in ps])) for ps in params]


def siren_forward(params, coords, convention):
    """(B, P, C) outputs of B SIRENs at coordinates (P, 2), offset included."""
    h = coords.unsqueeze(0).expand(params[0][0].shape[0], *coords.shape)
    for l, (W, b) in enumerate(params):
        h = torch.baddbmm(b.unsqueeze(1), h, W.transpose(1, 2))
        if l < len(params) - 1:
            h = torch.sin(convention.w0 * h)
    return h + convention.output_offset


def siren_loss_and_grads(params, coords, target, convention):
    """Each network's mean squared error and the gradient of their sum, by a hand-written
    backward pass (1.25-1.45x faster than autograd on CPU, docs/performance.md: ``w0`` is folded
    into ``baddbmm``'s scalars and into the small weight matrices, so the only elementwise passes
    over the (B, P, width) activations are one ``sin``, one ``cos`` and one product per sine
    layer).

    ``params``: [(W (B, out, in), b (B, out)), ...]; ``coords``: (P, 2); ``target``: (B, P, C).
    Returns (mse (B,), [(dW, db), ...] shaped like ``params``). The networks are independent:
    network i's gradient depends on network i alone."""
    w0, L = convention.w0, len(params)
    B = params[0][0].shape[0]
    inputs = [coords.unsqueeze(0).expand(B, *coords.shape)]    # input of layer l, (B, P, in)
    cos_z = []                                                 # cos(w0 u_l) of each sine layer
    for l, (W, b) in enumerate(params):
        if l < L - 1:                                          # z = w0 (h W^T + b), h' = sin z
            z = torch.baddbmm(b.unsqueeze(1), inputs[-1], W.transpose(1, 2), beta=w0, alpha=w0)
            inputs.append(torch.sin(z))
            cos_z.append(torch.cos(z))
        else:
            out = torch.baddbmm(b.unsqueeze(1), inputs[-1], W.transpose(1, 2))
    residual = out + convention.output_offset - target         # (B, P, C)
    mse = residual.pow(2).mean(dim=(1, 2))
    # d = dLoss/du_l for u_l = h W_l^T + b_l (before w0 and sin), from the last layer down
    d = residual * (2.0 / (residual.shape[1] * residual.shape[2]))
    grads = [None] * L
    for l in range(L - 1, -1, -1):
        grads[l] = (torch.bmm(d.transpose(1, 2), inputs[l]), d.sum(1))
        if l > 0:          # layer l reads h_l = sin(w0 u_{l-1}): d_{l-1} = (d_l W_l) w0 cos(w0 u)
            d = torch.bmm(d, params[l][0] * w0).mul_(cos_z[l - 1])
    return mse, grads


def fit_sirens(images, seeds, convention: SirenConvention, widths=None, steps=200, lr=1e-3,
               init="nfn"):
    """Fit one SIREN per image. ``images``: (B, H, W) or (B, H, W, C) in [0, 1].

    Returns (list of state dicts in the convention's key layout, PSNR per network in dB)."""
    imgs = torch.as_tensor(images, dtype=torch.float32)
    if imgs.dim() == 3:
        imgs = imgs.unsqueeze(-1)
    B, H, W, C = imgs.shape
    widths = list(widths or (2, 32, 32, C))
    target = to_target_range(imgs.reshape(B, H * W, C), convention)
    xy = coordinates(H, W, convention)
    params = init_sirens(seeds, widths, convention, init)
    leaves = [t for pair in params for t in pair]
    opt = torch.optim.Adam(leaves, lr=lr)
    for _ in range(steps):
        _, grads = siren_loss_and_grads(params, xy, target, convention)
        for leaf, g in zip(leaves, (g for pair in grads for g in pair)):
            leaf.grad = g
        opt.step()
    with torch.no_grad():
        mse = ((siren_forward(params, xy, convention) - target) ** 2).mean(dim=(1, 2))
    rng = convention.target_range[1] - convention.target_range[0]
    psnr = (10 * torch.log10(rng ** 2 / mse.clamp_min(1e-20))).tolist()
    return [_state_dict(params, i, convention) for i in range(B)], psnr


def _state_dict(params, i, convention):
    sd = {}
    L = len(params)
    for l, (W, b) in enumerate(params):
        if convention.style == "dwsnets":
            prefix = f"seq.{l}"
        else:
            prefix = f"net.{l}" if l == L - 1 else f"net.{l}.linear"
        sd[f"{prefix}.weight"] = W[i].detach().clone()
        sd[f"{prefix}.bias"] = b[i].detach().clone()
    return sd


# -- resumable writing ---------------------------------------------------------------------------
LOG_FIELDS = ["path", "label", "index", "psnr", "seed", "steps", "lr", "init"]


def _done(log_path, root):
    if not Path(log_path).exists():
        return set()
    with open(log_path, newline="") as fh:
        return {r["path"] for r in csv.DictReader(fh) if (root / r["path"]).exists()}


def fit_and_write(jobs, root, convention, steps=200, lr=1e-3, init="nfn", chunk=64,
                  log_name="fit_log.csv", progress=True, stop_after_chunks=None):
    """Fit and write ``jobs`` = [(relative path, image, label, index, seed, extra entries)].

    Resumable (see module doc). ``stop_after_chunks`` stops early (for tests of resumption)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log_path = root / log_name
    done = _done(log_path, root)
    new_log = not log_path.exists()
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    todo = [c for c in chunks if any(j[0] not in done for j in c)]
    from ..progress import bar as progress_bar
    bar = progress_bar(len(jobs), "fitting SIRENs", "net", enabled=progress,
                       initial=len(jobs) - sum(len(c) for c in todo))
    with open(log_path, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        if new_log:
            w.writeheader()
        for n_chunk, c in enumerate(todo):
            if stop_after_chunks is not None and n_chunk >= stop_after_chunks:
                break
            imgs = np.stack([j[1] for j in c]).astype(np.float32) / 255.0
            sds, psnr = fit_sirens(imgs, [j[4] for j in c], convention, steps=steps, lr=lr,
                                   init=init)
            rows = []
            for j, sd, p in zip(c, sds, psnr):
                if j[0] in done:
                    continue
                atomic_save({**sd, **j[5]}, root / j[0])
                rows.append({"path": j[0], "label": j[2], "index": j[3], "psnr": f"{p:.3f}",
                             "seed": j[4], "steps": steps, "lr": lr, "init": init})
            for r in rows:
                w.writerow(r)
            fh.flush()
            os.fsync(fh.fileno())
            if bar is not None:
                bar.update(len(c))
    if bar is not None:
        bar.close()
    return read_log(log_path)


def read_log(path) -> list:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- the public layouts --------------------------------------------------------------------------
def generate_dwsnets_mnist(out, images, labels, train_mask, *, steps=200, lr=1e-3, init="nfn",
                           val_size=None, seed=0, chunk=64, progress=True,
                           stop_after_chunks=None):
    """``out/mnist-inrs/mnist_png_{training|testing}_{label}_{index}/checkpoints/
    model_final.pth`` (keys ``seq.*``, +0.5, targets in [0, 1]) and ``out/mnist_splits.json``
    (``{split: {"path", "label"}}``; val drawn from the training INRs with ``seed``). The source
    images are saved in ``out/mnist-inrs/images.npz`` (for editing targets)."""
    out = Path(out)
    root = out / "mnist-inrs"
    jobs = []
    for i, (img, lab, tr) in enumerate(zip(images, labels, train_mask)):
        kind = "training" if tr else "testing"
        rel = f"mnist_png_{kind}_{int(lab)}_{i}/checkpoints/model_final.pth"
        jobs.append((rel, img, int(lab), i, seed * 1_000_003 + i, {}))
    log = fit_and_write(jobs, root, DWSNETS, steps, lr, init, chunk, progress=progress,
                        stop_after_chunks=stop_after_chunks)
    if len(log) < len(jobs):
        return log
    np.savez_compressed(root / "images.npz", images=np.asarray(images),
                        labels=np.asarray(labels), index=np.arange(len(images)))
    train = [(f"mnist-inrs/{j[0]}", j[2]) for j in jobs if "_training_" in j[0]]
    test = [(f"mnist-inrs/{j[0]}", j[2]) for j in jobs if "_testing_" in j[0]]
    rng = random.Random(seed)
    rng.shuffle(train)
    n_val = val_size if val_size is not None else max(1, len(train) // 12)
    splits = {"train": train[n_val:], "val": train[:n_val], "test": test}
    payload = {k: {"path": [p for p, _ in v], "label": [str(lb) for _, lb in v]}
               for k, v in splits.items()}
    payload["_meta"] = {"seed": seed, "val_size": n_val, "generator": "scalegmn data"}
    (out / "mnist_splits.json").write_text(json.dumps(payload))
    return log


def generate_dwsnets_fmnist(out, images, labels, train_mask, *, steps=200, lr=1e-3, init="nfn",
                            val_size=None, seed=0, chunk=64, progress=True):
    """``out/fmnist_inrs/{train,test}/model_{idx}.pth`` (with a ``label`` entry) and
    ``out/fmnist_inrs/splits.json`` (``{split: [paths]}``)."""
    root = Path(out) / "fmnist_inrs"
    jobs = []
    for i, (img, lab, tr) in enumerate(zip(images, labels, train_mask)):
        rel = f"{'train' if tr else 'test'}/model_{i}.pth"
        jobs.append((rel, img, int(lab), i, seed * 1_000_003 + i, {"label": int(lab)}))
    log = fit_and_write(jobs, root, DWSNETS, steps, lr, init, chunk, progress=progress)
    train = [f"fmnist_inrs/{j[0]}" for j in jobs if j[0].startswith("train/")]
    test = [f"fmnist_inrs/{j[0]}" for j in jobs if j[0].startswith("test/")]
    random.Random(seed).shuffle(train)
    n_val = val_size if val_size is not None else max(1, len(train) // 12)
    (root / "splits.json").write_text(json.dumps(
        {"train": train[n_val:], "val": train[:n_val], "test": test}))
    np.savez_compressed(root / "images.npz", images=np.asarray(images),
                        labels=np.asarray(labels), index=np.arange(len(images)))
    return log


def generate_nfn_siren(out, name, images, labels, *, extra_aug=0, steps=200, lr=1e-3,
                       init="nfn", seed=0, chunk=64, progress=True):
    """``out/siren_{name}_wts/randinit_smaller_{label}s/net{idx}.pth`` (keys ``net.*``, targets
    in [-1, 1], (row, column) coordinates) and ``randinit_smaller_aug{k}_{label}s/`` re-fits of
    the same images from new initialisations. ``idx`` is the position in ``images``."""
    root = Path(out) / f"siren_{name}_wts"
    jobs = []
    for k in range(-1, extra_aug):
        folder = "randinit_smaller_{}s" if k < 0 else f"randinit_smaller_aug{k}_{{}}s"
        for i, (img, lab) in enumerate(zip(images, labels)):
            rel = f"{folder.format(int(lab))}/net{i}.pth"
            jobs.append((rel, img, int(lab), i, (seed * 31 + k + 1) * 1_000_003 + i, {}))
    log = fit_and_write(jobs, root, NFN, steps, lr, init, chunk, progress=progress)
    np.savez_compressed(root / "images.npz", images=np.asarray(images),
                        labels=np.asarray(labels), index=np.arange(len(images)))
    return log


# -- editing targets -----------------------------------------------------------------------------
def editing_targets(images, kind="dilate"):
    """Targets in [0, 1] for INR editing from uint8 images (N, H, W[, C]).

    ``dilate``: a 3x3 grey dilation (equals cv2.dilate with a 3x3 ones kernel, 1 iteration).
    ``contrast``: CLAHE (clip 1.0, 3x3 tiles) on the L channel, as NFN (needs
    opencv-python-headless)."""
    x = torch.as_tensor(np.asarray(images), dtype=torch.float32) / 255.0
    if kind == "dilate":
        if x.dim() == 3:
            x = x.unsqueeze(1)
        else:
            x = x.permute(0, 3, 1, 2)
        y = torch.nn.functional.max_pool2d(x, 3, stride=1, padding=1)
        return y.squeeze(1).numpy() if y.shape[1] == 1 else y.permute(0, 2, 3, 1).numpy()
    if kind == "contrast":
        try:
            import cv2
        except ImportError as e:
            raise ImportError("contrast targets need OpenCV: pip install "
                              "opencv-python-headless") from e
        clahe = cv2.createCLAHE(clipLimit=1.0, tileGridSize=(3, 3))
        out = []
        for im in np.asarray(images):
            if im.ndim == 2:
                out.append(clahe.apply(im))
            else:   # NFN passes RGB through COLOR_BGR2LAB (kept as published)
                lab = cv2.cvtColor(im, cv2.COLOR_BGR2LAB)
                lab[..., 0] = clahe.apply(lab[..., 0])
                out.append(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR))
        return np.stack(out).astype(np.float32) / 255.0
    raise ValueError(f"unknown editing target {kind!r}; choose dilate or contrast")
