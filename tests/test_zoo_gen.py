"""The local CNN-zoo generator (scalegmn.data.zoo_gen): format, loader round trip, accuracies,
resumption, activations, divergence handling. Tiny settings: sklearn's digits upsampled to
16x16, 8 networks in chunks of 4, 40 steps (one thread, so a busy machine stays fast)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("sklearn")

import converters  # noqa: E402
from scalegmn.data import zoo_gen  # noqa: E402
from scalegmn.data.datasets import DataError  # noqa: E402
from scalegmn.data.images import sklearn_digits  # noqa: E402
from scalegmn.data.zoo import (METRIC_COLUMNS, cnn_zoo, read_metrics, read_split_file,  # noqa
                               state_dict_to_row)

KW = dict(n_nets=8, group=4, steps=40, batch_size=64, seed=0, checkpoint_steps=(20, 40),
          dataset_name="sklearn_digits_16x16", progress=False, num_threads=1)
TRAIN_KW = dict(steps=40, batch_size=64, seed=0, checkpoint_steps=(20, 40), num_threads=1)


@pytest.fixture(scope="module")
def digits():
    X, y = sklearn_digits()
    X16 = F.interpolate(torch.tensor(X, dtype=torch.float32)[:, None], size=(16, 16),
                        mode="bilinear", align_corners=False)[:, 0]
    X16 = X16.round().clamp(0, 255).numpy().astype(np.uint8)
    perm = np.random.default_rng(0).permutation(len(X))
    tr, te = perm[:1400], perm[1400:]
    return X16[tr], y[tr], X16[te], y[te]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    assert zoo_gen.generate_cnn_zoo(out, *digits, **KW) == out
    return out


def _final(metrics):
    return [m for m in metrics if int(m["step"]) == 86]


def _count(path, split, **kw):
    try:
        return len(cnn_zoo(path, split=split, **kw))
    except DataError:       # a split left empty by a filter
        return 0


def test_files_and_metrics(zoo):
    w = np.load(zoo / "weights.npy")
    metrics = read_metrics(zoo / "metrics.csv.gz")
    assert w.dtype == np.float32 and w.shape == (8 * 3, 4970) and np.isfinite(w).all()
    assert len(metrics) == len(w)
    for m in metrics:
        assert all(m[c] != "" for c in METRIC_COLUMNS), m
        assert m["config.dataset"] == "sklearn_digits_16x16"
        assert m["config.w_init"] == "RandomNormal" and m["config.b_init"] == "zeros"
        assert (m["config.num_layers"], m["config.num_units"], m["config.epochs"]) == \
            ("3", "16", "86")
        assert m["config.optimizer"] in ("sgd", "momentum", "adam")
        assert float(m["config.train_fraction"]) in (0.1, 0.25, 0.5, 1.0)
        assert 0 <= float(m["config.dropout"]) <= 0.5
        assert 10 ** -4 <= float(m["config.learning_rate"]) <= 10 ** -1.5
        assert 10 ** -2 <= float(m["config.init_std"]) <= 10 ** -0.3
        assert 1e-8 <= float(m["config.l2reg"]) <= 1e-2
    # one row per (network, checkpoint), ordered by network then step
    assert [(m["modeldir"], int(m["step"])) for m in metrics] == \
        [(f"net_{i}", s) for i in range(8) for s in (20, 40, 86)]
    split = read_split_file(zoo / "zoo_split.csv")
    assert sorted(split) == list(range(len(w)))
    # the work folder: one file per chunk, a log, the settings
    work = zoo / zoo_gen.WORK_DIR
    assert sorted(p.name for p in work.glob("chunk_*.npz")) == ["chunk_0.npz", "chunk_1.npz"]
    assert json.loads((work / "settings.json").read_text())["dropped"] == []


def test_loader_counts_and_targets(zoo):
    metrics = read_metrics(zoo / "metrics.csv.gz")
    final = _final(metrics)
    n_act = {a: sum(m["config.activation"] == a for m in final) for a in ("relu", "tanh")}
    for protocol in ("split_then_filter", "filter_then_split"):
        assert sum(_count(zoo, s, protocol=protocol) for s in ("train", "val", "test")) == 8
        for act, n in n_act.items():
            assert sum(_count(zoo, s, protocol=protocol, activation=act)
                       for s in ("train", "val", "test")) == n
    seen = set()
    for split in ("train", "val", "test"):
        ds = cnn_zoo(zoo, split=split)
        for k, (row, target, act) in enumerate(ds.items):
            m = metrics[row]
            assert int(m["step"]) == 86 and act == m["config.activation"]
            assert target == float(m["test_accuracy"])
            assert ds[k].y.item() == pytest.approx(float(m["test_accuracy"]), abs=1e-7)
            seen.add(m["modeldir"])
    assert seen == {f"net_{i}" for i in range(8)}


def test_roundtrip_matches_trained_modules(zoo, digits):
    """Weights written == the generator's trained weights; the graph of a loaded row rebuilds a
    module computing what converters.models.cnn_zoo with those weights computes."""
    metrics = read_metrics(zoo / "metrics.csv.gz")
    w = np.load(zoo / "weights.npy")
    res = zoo_gen.train_nets(range(4), *digits, **TRAIN_KW)     # chunk 0, trained again
    row_of = {(m["modeldir"], int(m["step"])): r for r, m in enumerate(metrics)}
    for r in res:
        for label, sd, _ in r["checkpoints"]:
            assert np.array_equal(w[row_of[(f"net_{r['index']}", label)]],
                                  state_dict_to_row(sd))
    trained = {f"net_{r['index']}": r for r in res}
    x = torch.tensor(digits[2][:200], dtype=torch.float32)[:, None] / 255 * 2 - 1
    checked = 0
    for split in ("train", "val", "test"):
        ds = cnn_zoo(zoo, split=split)
        for k, (row, _, act) in enumerate(ds.items):
            name = metrics[row]["modeldir"]
            if name not in trained:
                continue
            rebuilt = converters.to_module(ds[k])
            ref = converters.models.cnn_zoo(activation=act)
            ref.load_state_dict(trained[name]["checkpoints"][-1][1])
            ref.eval()
            with torch.no_grad():
                a, b = rebuilt(x), ref(x)
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
            # the recorded accuracy is that of the module (up to near-ties of the logits)
            xt = torch.tensor(digits[2], dtype=torch.float32)[:, None] / 255 * 2 - 1
            with torch.no_grad():
                acc = (ref(xt).argmax(1).numpy() == digits[3]).mean()
            assert abs(acc - float(metrics[row]["test_accuracy"])) <= 2 / len(xt)
            checked += 1
    assert checked == 4


def test_accuracies(zoo):
    metrics = read_metrics(zoo / "metrics.csv.gz")
    for m in metrics:
        for c in ("test_accuracy", "train_accuracy"):
            assert 0.0 <= float(m[c]) <= 1.0
        for c in ("test_loss", "train_loss"):
            assert np.isfinite(float(m[c])) and float(m[c]) > 0
    acc = np.array([float(m["test_accuracy"]) for m in _final(metrics)])
    assert acc.std() > 0.03 and len(set(acc.round(4))) >= 5        # a spread
    assert acc.max() > 0.3 and (acc > 0.2).sum() >= 2              # chance is 0.1


def test_resume_equals_uninterrupted(zoo, digits, tmp_path):
    out = tmp_path / "zoo"
    zoo_gen.generate_cnn_zoo(out, *digits, **{**KW, "progress": True}, stop_after_chunks=1)
    work = out / zoo_gen.WORK_DIR
    assert [p.name for p in work.glob("chunk_*.npz")] == ["chunk_0.npz"]
    assert not (out / "weights.npy").exists()
    zoo_gen.generate_cnn_zoo(out, *digits, **KW)
    assert np.array_equal(np.load(out / "weights.npy"), np.load(zoo / "weights.npy"))
    assert read_metrics(out / "metrics.csv.gz") == read_metrics(zoo / "metrics.csv.gz")
    assert (out / "zoo_split.csv").read_text() == (zoo / "zoo_split.csv").read_text()
    log = (work / "log.csv").read_text().splitlines()
    assert len(log) == 3                      # header + one line per chunk, none repeated
    # a rerun of a finished zoo trains nothing and rewrites the same files
    zoo_gen.generate_cnn_zoo(out, *digits, **KW)
    assert (work / "log.csv").read_text().splitlines() == log
    assert np.array_equal(np.load(out / "weights.npy"), np.load(zoo / "weights.npy"))


def test_relu_and_tanh_labelled(zoo):
    metrics = read_metrics(zoo / "metrics.csv.gz")
    acts = {int(m["modeldir"].split("_")[1]): m["config.activation"] for m in metrics}
    assert acts == {i: ("relu", "tanh")[i % 2] for i in range(8)}
    loaded = {a for s in ("train", "val", "test") for _, _, a in cnn_zoo(zoo, split=s).items}
    assert loaded == {"relu", "tanh"}
    for act in ("relu", "tanh"):
        ds = cnn_zoo(zoo, split="test", activation=act, protocol="filter_then_split")
        assert all(a == act for _, _, a in ds.items)


def test_independent_of_chunk_mates(zoo, digits):
    """A network trained with other companions (or fewer) gives the same weights, up to the
    rounding of batched kernels, and the same hyperparameters."""
    metrics = read_metrics(zoo / "metrics.csv.gz")
    w = np.load(zoo / "weights.npy")
    res = zoo_gen.train_nets([5, 2], *digits, **TRAIN_KW)
    for r in res:
        row = next(k for k, m in enumerate(metrics)
                   if m["modeldir"] == f"net_{r['index']}" and m["step"] == "86")
        assert np.allclose(w[row], state_dict_to_row(r["checkpoints"][-1][1]), atol=1e-5)
        assert r["hparams"]["learning_rate"] == float(metrics[row]["config.learning_rate"])
        assert r["hparams"] == zoo_gen.sample_hparams(r["index"], 0)


def test_diverged_net_dropped(digits, tmp_path, monkeypatch):
    real = zoo_gen.sample_hparams

    def exploding(index, seed=0, activations=("relu", "tanh")):
        hp = real(index, seed, activations)
        if index == 1:
            hp.update(optimizer="sgd", learning_rate=1e30, init_std=0.5)
        return hp

    # a checkpoint at label 0 (the initial weights) is taken before it diverges: dropped too
    kw = {**KW, "n_nets": 4, "steps": 5, "checkpoint_steps": (0,)}
    monkeypatch.setattr(zoo_gen, "sample_hparams", exploding)
    with pytest.warns(UserWarning, match="1 of 4 network"):
        zoo_gen.generate_cnn_zoo(tmp_path / "zoo", *digits, **kw)
    w = np.load(tmp_path / "zoo" / "weights.npy")
    metrics = read_metrics(tmp_path / "zoo" / "metrics.csv.gz")
    assert np.isfinite(w).all() and len(w) == 6
    assert [(m["modeldir"], m["step"]) for m in metrics] == \
        [(f"net_{i}", s) for i in (0, 2, 3) for s in ("0", "86")]
    info = json.loads((tmp_path / "zoo" / zoo_gen.WORK_DIR / "settings.json").read_text())
    assert [d["index"] for d in info["dropped"]] == [1]
    # the others trained as if the diverged one had not been there
    monkeypatch.setattr(zoo_gen, "sample_hparams", real)
    res = zoo_gen.train_nets([0, 2, 3], *digits, steps=5, batch_size=64, num_threads=1)
    for row, r in zip(w[1::2], res):
        assert np.allclose(row, state_dict_to_row(r["checkpoints"][-1][1]), atol=1e-5)


def test_errors(zoo, digits):
    X, y = sklearn_digits()
    with pytest.raises(ValueError, match="upsample"):
        zoo_gen.generate_cnn_zoo(zoo.parent / "small", X, y, X, y, n_nets=2, progress=False)
    with pytest.raises(ValueError, match="other settings"):   # the folder holds other chunks
        zoo_gen.generate_cnn_zoo(zoo, *digits, **{**KW, "steps": 41})
    with pytest.raises(ValueError, match="checkpoint_steps"):
        zoo_gen.train_nets([0], *digits, steps=2, checkpoint_steps=(86,))


def test_hparams_distribution():
    hps = [zoo_gen.sample_hparams(i, seed=7) for i in range(300)]
    assert hps[0] == zoo_gen.sample_hparams(0, seed=7) != zoo_gen.sample_hparams(0, seed=8)
    assert {h["optimizer"] for h in hps} == {"sgd", "momentum", "adam"}
    assert {h["train_fraction"] for h in hps} == {0.1, 0.25, 0.5, 1.0}
    for h in hps:
        lo, hi = (-4, -2.5) if h["optimizer"] == "adam" else (-3.5, -1.5)
        assert lo <= np.log10(h["learning_rate"]) <= hi
        assert -2 <= np.log10(h["init_std"]) <= -0.3
        assert -8 <= np.log10(h["l2reg"]) <= -2 and 0 <= h["dropout"] <= 0.5
