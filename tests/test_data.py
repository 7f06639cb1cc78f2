"""Data sets: the public layouts written by our generators and read back by our loaders, bad
input, resumable generation, conventions and rendering, transforms and exporters."""
import gzip
import json
import warnings

import numpy as np
import pytest
import torch

import converters as C
from scalegmn.data import DataError, load_dataset, render
from scalegmn.data import generate as G
from scalegmn.data import images as I
from scalegmn.data import zoo as Z
from scalegmn.data.conventions import DWSNETS, NFN
from scalegmn.data.export import export_siren, siren_state_dict, zoo_rows
from scalegmn.data.transforms import RandomAction, ReluScaleCanonical, SirenCanonical


@pytest.fixture(scope="module")
def digits():
    X, y = I.sklearn_digits()
    return X[:24], y[:24]


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory, digits):
    out = tmp_path_factory.mktemp("dws")
    X, y = digits
    mask = np.arange(len(X)) < 18
    G.generate_dwsnets_mnist(out, X, y, mask, steps=150, lr=2e-3, chunk=8, val_size=4,
                             progress=False)
    return out


def test_dwsnets_mnist_layout_and_loading(mnist_dir, digits):
    X, y = digits
    root = mnist_dir / "mnist-inrs"
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert len(folders) == 24 and folders[0].startswith("mnist_png_t")
    f = root / folders[0] / "checkpoints" / "model_final.pth"
    sd = torch.load(f, weights_only=True)
    assert list(sd) == ["seq.0.weight", "seq.0.bias", "seq.1.weight", "seq.1.bias",
                        "seq.2.weight", "seq.2.bias"]
    splits = json.loads((mnist_dir / "mnist_splits.json").read_text())
    assert {k: len(v["path"]) for k, v in splits.items() if k != "_meta"} == \
        {"train": 14, "val": 4, "test": 6}
    ds = {s: load_dataset(mnist_dir, "dwsnets-mnist", s) for s in ("train", "val", "test")}
    assert sum(len(d) for d in ds.values()) == 24
    g = ds["test"][0]
    name = splits["test"]["path"][0].split("/")[1]
    assert int(g.y) == int(name.split("_")[-2]) == int(splits["test"]["label"][0])
    assert g.convention == "dwsnets" and g.arch.meta["convention"]["output_offset"] == 0.5
    # weights are the file's, bitwise
    sd = torch.load(mnist_dir / splits["test"]["path"][0], weights_only=True)
    assert all(torch.equal(C.to_state_dict(g)[k], v) for k, v in sd.items())
    # ScaleGMN-style relative paths and DWSNets-style absolute paths both resolve
    alt = {k: {"path": ["data/" + p for p in v["path"]], "label": v["label"]}
           for k, v in splits.items() if k != "_meta"}
    (mnist_dir / "alt.json").write_text(json.dumps(alt))
    assert len(load_dataset(mnist_dir, "dwsnets-mnist", "val", split_file="alt.json")) == 4


@pytest.mark.parametrize("convention", [DWSNETS, NFN], ids=["dwsnets", "nfn"])
def test_hand_written_siren_gradient_matches_autograd_on_torch_modules(convention):
    """The fitter's hand-written backward pass against autograd on independent ``nn.Linear``
    SIRENs, one per network, in float64 (loss: the sum of each network's MSE; widths 2-5-4-1
    and 2-6-2 so that a transposed or mis-scaled term cannot cancel)."""
    for widths in ((2, 5, 4, 1), (2, 6, 2)):
        params = [(W.double(), b.double()) for W, b in
                  G.init_sirens([3, 4, 5], list(widths), convention, "nfn")]
        xy = torch.rand(7, 2, dtype=torch.float64) * 2 - 1
        target = torch.rand(3, 7, widths[-1], dtype=torch.float64)
        mse, grads = G.siren_loss_and_grads(params, xy, target, convention)
        for i in range(3):
            layers = [torch.nn.Linear(fi, fo).double() for fi, fo in zip(widths, widths[1:])]
            with torch.no_grad():
                for lin, (W, b) in zip(layers, params):
                    lin.weight.copy_(W[i])
                    lin.bias.copy_(b[i])
            h = xy
            for lin in layers[:-1]:
                h = torch.sin(convention.w0 * lin(h))
            out = layers[-1](h) + convention.output_offset
            loss = ((out - target[i]) ** 2).mean()
            loss.backward()
            assert torch.allclose(mse[i], loss.detach(), rtol=1e-12, atol=0)
            for lin, (dW, db) in zip(layers, grads):
                assert torch.allclose(dW[i], lin.weight.grad, rtol=1e-10, atol=1e-12)
                assert torch.allclose(db[i], lin.bias.grad, rtol=1e-10, atol=1e-12)


def test_fitted_siren_reproduces_its_image(mnist_dir):
    """A loaded SIREN, converted to a module, draws the image it was fitted to."""
    data = np.load(mnist_dir / "mnist-inrs" / "images.npz")
    ds = load_dataset(mnist_dir, "dwsnets-mnist", "test")
    splits = json.loads((mnist_dir / "mnist_splits.json").read_text())
    for g, path in list(zip(ds, splits["test"]["path"]))[:3]:
        idx = int(path.split("/")[1].split("_")[-1])
        target = torch.tensor(data["images"][idx], dtype=torch.float32) / 255
        img = render([g], DWSNETS, 8, 8)[0, 0]
        psnr = 10 * torch.log10(1 / ((img - target) ** 2).mean())
        assert psnr > 30, float(psnr)
        net = C.to_module(g)   # the module (with its +0.5) on the (x=col, y=row) grid
        from scalegmn.data import coordinates
        assert torch.allclose(net(coordinates(8, 8, DWSNETS)).reshape(8, 8), img, atol=1e-5)
        # the transposed grid (the other convention) does not reproduce it
        wrong = net(coordinates(8, 8, NFN)).reshape(8, 8)
        assert ((wrong - target) ** 2).mean() > 4 * ((img - target) ** 2).mean()


def test_fmnist_layout(tmp_path, digits):
    X, y = digits
    G.generate_dwsnets_fmnist(tmp_path, X[:10], y[:10], np.arange(10) < 7, steps=20,
                              val_size=2, chunk=8, progress=False)
    sd = torch.load(tmp_path / "fmnist_inrs" / "train" / "model_0.pth", weights_only=True)
    assert int(sd["label"]) == int(y[0])
    splits = json.loads((tmp_path / "fmnist_inrs" / "splits.json").read_text())
    assert isinstance(splits["train"], list) and len(splits["test"]) == 3
    ds = load_dataset(tmp_path, "dwsnets-fmnist", "test")
    assert sorted(ds.labels) == sorted(int(v) for v in y[7:10])
    assert int(ds[0].y) in set(int(v) for v in y)


def test_nfn_layout_with_aug_and_split_points(tmp_path, digits):
    X, y = digits
    G.generate_nfn_siren(tmp_path, "digits", X[:12], y[:12], extra_aug=2, steps=20, chunk=8,
                         progress=False)
    root = tmp_path / "siren_digits_wts"
    base = sorted(p.name for p in root.iterdir() if p.name.startswith("randinit_smaller_")
                  and "aug" not in p.name)
    assert base == sorted({f"randinit_smaller_{int(v)}s" for v in y[:12]})
    assert (root / f"randinit_smaller_aug1_{int(y[0])}s" / "net0.pth").exists()
    sd = torch.load(root / base[0] / next((root / base[0]).iterdir()).name, weights_only=True)
    assert list(sd)[0] == "net.0.linear.weight" and "net.2.weight" in sd
    kw = dict(split_points=(6, 9))
    assert len(load_dataset(root, "nfn-siren", "train", **kw)) == 6
    assert len(load_dataset(root, "nfn-siren", "train", extra_aug=2, **kw)) == 18
    assert len(load_dataset(root, "nfn-siren", "val", extra_aug=2, **kw)) == 3
    test = load_dataset(root, "nfn-siren", "test", **kw)
    assert len(test) == 3 and [int(g.y) for g in test] == [int(v) for v in y[9:12]]
    assert test[0].convention == "nfn"


def _zoo_fixture(path, n_nets=10, stray=True, nan_row=None):
    torch.manual_seed(0)
    rows, metrics, modules = [], [], []
    for i in range(n_nets):
        act = "relu" if i % 2 == 0 else "tanh"
        m = C.models.cnn_zoo(activation=act)
        for step in (20, 86):
            rows.append(Z.state_dict_to_row(m.state_dict()))
            metrics.append({"config.activation": act, "step": step, "modeldir": f"net_{i}",
                            "test_accuracy": round(0.1 + 0.08 * i + step / 1000, 4)})
        modules.append(m)
    rows = np.stack(rows)
    if nan_row is not None:
        rows[nan_row, 5] = np.nan
    perm = list(np.random.default_rng(0).permutation(len(rows)))
    if stray:   # the official split file's stray leading 0 (a pandas header)
        perm = [0] + perm
    Z.write_zoo(path, rows, metrics, split=perm, split_name="zoo_split.csv")
    return modules, metrics


def test_cnn_zoo_layout_and_protocols(tmp_path):
    modules, metrics = _zoo_fixture(tmp_path)
    layout = Z.read_layout(tmp_path / "layout.csv")
    assert layout[1] == ("sequential/conv2d/kernel:0", 16, 160, (3, 3, 1, 16))
    assert layout[-1][2] == 4970
    with gzip.open(tmp_path / "metrics.csv.gz", "rt") as fh:
        header = fh.readline().strip().split(",")
    assert header[0] == "" and "test_accuracy" in header and "config.activation" in header
    assert Z.read_split_file(tmp_path / "zoo_split.csv")[0] == 0
    sizes = {s: len(Z.cnn_zoo(tmp_path, s)) for s in ("train", "val", "test")}
    # 21 ordered rows incl. the duplicate 0; step-86 rows only: 10 or 11 (row 0 is step 20)
    assert sum(sizes.values()) == 10
    ds = Z.cnn_zoo(tmp_path, "test")
    assert isinstance(ds.weights, np.memmap)
    for i, g in enumerate(ds):
        row = ds.items[i][0]
        assert float(g.y) == pytest.approx(float(metrics[row]["test_accuracy"]))
        net = int(metrics[row]["modeldir"].split("_")[1])
        sd = C.to_state_dict(g)
        for k, v in modules[net].state_dict().items():
            assert torch.equal(sd[k], v), k
    a = Z.cnn_zoo(tmp_path, "train", activation="relu")
    b = Z.cnn_zoo(tmp_path, "train", activation="relu", protocol="filter_then_split")
    assert all(g.arch.nodesets[1]["group"] == "scale" for g in a)
    assert len(b) >= 1 and {it[2] for it in b.items} == {"relu"}
    assert len(Z.cnn_zoo(tmp_path, "test", min_accuracy=0.5)) < sizes["test"]


def test_bad_input_names_the_culprit(tmp_path, mnist_dir, digits):
    with pytest.raises(DataError, match="missing folder"):
        load_dataset(tmp_path / "nope", "dwsnets-mnist")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no SIRENs"):
        load_dataset(tmp_path / "empty", "nfn-siren")
    with pytest.raises(DataError, match="holds no mnist-inrs/ folder"):
        load_dataset(tmp_path / "empty", "dwsnets-mnist")
    # a truncated and a wrong-keyed checkpoint inside an otherwise good data set
    splits = json.loads((mnist_dir / "mnist_splits.json").read_text())
    bad = tmp_path / "bad"
    import shutil
    shutil.copytree(mnist_dir, bad)
    broken = bad / splits["val"]["path"][0]
    broken.write_bytes(broken.read_bytes()[:100])
    wrong = bad / splits["val"]["path"][1]
    sd = torch.load(wrong, weights_only=True)
    sd["seq.9.weight"] = sd.pop("seq.2.weight")
    torch.save(sd, wrong)
    ds = load_dataset(bad, "dwsnets-mnist", "val")
    with pytest.raises(DataError, match=str(broken.name)):
        ds[0]
    with pytest.raises(DataError, match="seq.2.weight"):
        ds[1]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        kept = load_dataset(bad, "dwsnets-mnist", "val", on_bad="skip")
    assert len(kept) == 2 and len(kept.skipped) == 2 and "skipped 2" in str(w[0].message)
    # NaN weights
    nan_file = bad / splits["test"]["path"][0]
    sd = torch.load(nan_file, weights_only=True)
    sd["seq.1.weight"][0, 0] = float("nan")
    torch.save(sd, nan_file)
    with pytest.raises(DataError, match="NaN"):
        load_dataset(bad, "dwsnets-mnist", "test")[0]
    # zoo: layout disagreeing with weights.npy, NaN rows
    zoo = tmp_path / "zoo"
    _zoo_fixture(zoo, n_nets=4, nan_row=3)
    with pytest.raises(DataError, match="row 3"):
        [g for g in Z.cnn_zoo(zoo, "test")] + [g for g in Z.cnn_zoo(zoo, "train")] + \
            [g for g in Z.cnn_zoo(zoo, "val")]
    np.save(zoo / "weights.npy", np.zeros((8, 4000), dtype=np.float32))
    with pytest.raises(DataError, match="layout.csv"):
        Z.cnn_zoo(zoo, "train")


def test_generation_resumes_exactly(tmp_path, digits):
    X, y = digits
    mask = np.arange(len(X)) < 18
    kw = dict(steps=15, chunk=8, val_size=3, progress=False)
    G.generate_dwsnets_mnist(tmp_path / "a", X, y, mask, **kw)
    part = G.generate_dwsnets_mnist(tmp_path / "b", X, y, mask, stop_after_chunks=1, **kw)
    assert len(part) == 8 and not (tmp_path / "b" / "mnist_splits.json").exists()
    G.generate_dwsnets_mnist(tmp_path / "b", X, y, mask, **kw)
    for sub in ("a", "b"):
        assert (tmp_path / sub / "mnist_splits.json").exists()
    ja = json.loads((tmp_path / "a" / "mnist_splits.json").read_text())
    jb = json.loads((tmp_path / "b" / "mnist_splits.json").read_text())
    assert ja == jb
    for p in ja["train"]["path"] + ja["test"]["path"]:
        sa = torch.load(tmp_path / "a" / p, weights_only=True)
        sb = torch.load(tmp_path / "b" / p, weights_only=True)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    la = G.read_log(tmp_path / "a" / "mnist-inrs" / "fit_log.csv")
    lb = G.read_log(tmp_path / "b" / "mnist-inrs" / "fit_log.csv")
    assert sorted(map(str, la)) == sorted(map(str, lb))


def test_folder_format_and_cli_fit(tmp_path):
    from PIL import Image
    from scalegmn.cli import main
    imgs = tmp_path / "imgs"
    for c in ("cats", "dogs"):
        (imgs / c).mkdir(parents=True)
        for i in range(3):
            arr = (np.random.default_rng(i).random((10, 10)) * 255).astype(np.uint8)
            Image.fromarray(arr).save(imgs / c / f"{i}.png")
    out = tmp_path / "fitted"
    assert main(["data", "fit", "--images", str(imgs), "--out", str(out), "--steps", "30",
                 "--size", "10", "10"]) == 0
    ds = load_dataset(out, "folder")
    assert len(ds) == 6 and sorted(ds.labels) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(DataError, match="no images"):
        I.image_folder(tmp_path / "fitted")


def test_transforms_keep_function_and_canonicalise():
    torch.manual_seed(0)
    siren = C.models.Siren((2, 12, 12, 1), output_offset=0.5).double()
    with torch.no_grad():
        for lin in siren.seq[:-1]:
            lin.bias.uniform_(-0.4, 0.4)
    g = C.to_graph(siren)
    x = torch.rand(30, 2, dtype=torch.float64) * 2 - 1
    canon = SirenCanonical()
    c = canon(g)
    assert (C.to_module(c)(x) - siren(x)).abs().max() < 1e-10
    assert torch.equal(canon(c).edge_attr, c.edge_attr) and torch.equal(canon(c).x, c.x)
    a = C.sample_action(g, torch.Generator().manual_seed(1))
    eq = C.Action(torch.arange(g.num_nodes), a.q).apply(g)        # sign flips
    eq.x[2:14, 0] += 2 * torch.pi / 30 * torch.randint(-3, 4, (12,)).double()   # phase shifts
    assert (C.to_module(eq)(x) - siren(x)).abs().max() < 1e-10
    ce = canon(eq)
    assert torch.allclose(ce.edge_attr, c.edge_attr, atol=1e-12)
    assert torch.allclose(ce.x, c.x, atol=1e-12)
    assert not torch.allclose(eq.x, g.x)       # the equivalent net really differed
    relu = C.models.mlp([3, 6, 5, 2]).double()
    gr = C.to_graph(relu)
    xr = torch.randn(7, 3, dtype=torch.float64)
    rc = ReluScaleCanonical()
    cr = rc(gr)
    assert (C.to_module(cr)(xr) - relu(xr)).abs().max() < 1e-12
    assert torch.allclose(rc(cr).edge_attr, cr.edge_attr, atol=1e-14)
    scaled = C.Action(torch.arange(gr.num_nodes),
                      C.sample_action(gr, scale_range=(1e-2, 1e2)).q).apply(gr)
    assert torch.allclose(rc(scaled).edge_attr, cr.edge_attr, atol=1e-12)
    aug = RandomAction()(gr)
    assert torch.equal(aug.edge_index, gr.edge_index) and not torch.equal(aug.edge_attr,
                                                                           gr.edge_attr)
    assert (C.to_module(aug)(xr) - relu(xr)).abs().max() < 1e-10


def test_exporters(tmp_path):
    g = C.to_graph(C.models.Siren((2, 8, 8, 1), output_offset=0.5))
    nfn = siren_state_dict(g, "nfn")
    assert list(nfn) == ["net.0.linear.weight", "net.0.linear.bias", "net.1.linear.weight",
                         "net.1.linear.bias", "net.2.weight", "net.2.bias"]
    export_siren(g, tmp_path / "m.pth", "dwsnets", label=3)
    back = torch.load(tmp_path / "m.pth", weights_only=True)
    assert int(back.pop("label")) == 3
    assert all(torch.equal(back[k], v) for k, v in C.to_state_dict(g).items())
    zoo = [C.to_graph(C.models.cnn_zoo()) for _ in range(2)]
    rows = zoo_rows(zoo)
    assert rows.shape == (2, 4970)
    sd = Z.row_to_state_dict(rows[1], Z.read_layout(_write_layout(tmp_path)))
    assert all(torch.equal(sd[k], v) for k, v in C.to_state_dict(zoo[1]).items())


def _write_layout(tmp_path):
    Z.write_layout(tmp_path / "layout.csv")
    return tmp_path / "layout.csv"


def test_editing_targets(digits):
    X, _ = digits
    t = G.editing_targets(X[:4], "dilate")
    assert t.shape == (4, 8, 8) and (t >= X[:4] / 255.0 - 1e-7).all()
    ref = torch.nn.functional.max_pool2d(torch.tensor(X[:1] / 255.0)[None].float(), 3, 1, 1)
    assert np.allclose(t[0], ref[0, 0].numpy())


# -- progress feedback -------------------------------------------------------------------------
def test_generator_reports_progress_with_rate_and_eta_in_logs(tmp_path, digits, capsys,
                                                              monkeypatch):
    """stderr is not a terminal here (as in a log file): plain lines, no carriage returns, one
    per update with SCALEGMN_PROGRESS_INTERVAL=0, each with count, rate and ETA."""
    monkeypatch.setenv("SCALEGMN_PROGRESS_INTERVAL", "0")
    X, y = digits
    G.generate_dwsnets_mnist(tmp_path, X[:6], y[:6], np.arange(6) < 4, steps=2, chunk=2,
                             val_size=1)
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("fitting SIRENs")]
    for done in (2, 4, 6):
        line = next(ln for ln in lines if f" {done}/6 " in ln)
        assert "net/s" in line and "<" in line, line       # rate and ETA (elapsed<left)
    capsys.readouterr()
    G.generate_dwsnets_mnist(tmp_path / "quiet", X[:2], y[:2], np.arange(2) < 1, steps=1,
                             chunk=2, val_size=1, progress=False)
    assert capsys.readouterr().err == ""


# -- where the data is: either folder, splits beside or inside mnist-inrs/ -----------------------
def _public_scalegmn_layout(root, mnist_dir):
    """``root/data/mnist-inrs/`` with ``mnist_splits.json`` inside it and its paths written as
    ScaleGMN's generate_data_splits writes them (``data/mnist-inrs/...``); nothing beside it."""
    import shutil
    inner = root / "data" / "mnist-inrs"
    shutil.copytree(mnist_dir / "mnist-inrs", inner)
    splits = json.loads((mnist_dir / "mnist_splits.json").read_text())
    public = {k: {"path": ["data/" + p for p in v["path"]], "label": v["label"]}
              for k, v in splits.items() if k != "_meta"}
    (inner / "mnist_splits.json").write_text(json.dumps(public))
    return inner, {k: len(v["path"]) for k, v in public.items()}


def test_published_scalegmn_layout_loads_from_either_folder(tmp_path, mnist_dir, monkeypatch,
                                                            caplog):
    import logging
    inner, sizes = _public_scalegmn_layout(tmp_path, mnist_dir)
    assert not (tmp_path / "data" / "mnist_splits.json").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)            # the splits' relative paths are not cwd-relative
    with caplog.at_level(logging.INFO, logger="scalegmn.data.datasets"):
        for path in (tmp_path / "data", inner):     # the outer folder or mnist-inrs/ itself
            for split, n in sizes.items():
                ds = load_dataset(path, "dwsnets-mnist", split)
                assert len(ds) == n and ds.source.endswith(
                    f"splits from '{inner / 'mnist_splits.json'}'"), ds.source
            assert int(ds[0].y) == int(json.loads((inner / "mnist_splits.json").read_text())
                                       ["test"]["label"][0])
    assert f"splits from '{inner / 'mnist_splits.json'}'" in caplog.text     # says which
    # a splits file beside mnist-inrs/ (DWSNets, scalegmn data) comes first, and says so
    from scalegmn.cli import main
    assert main(["data", "splits", "--path", str(inner)]) == 0          # mnist-inrs/ itself
    beside = tmp_path / "data" / "mnist_splits.json"
    assert beside.exists()
    ds = load_dataset(inner, "dwsnets-mnist", "test")
    assert ds.source.endswith(f"splits from '{beside}'") and len(ds) == sizes["test"]
    with pytest.raises(DataError, match="missing splits file.*mnist-inrs/nosuch.json"):
        load_dataset(tmp_path / "data", "dwsnets-mnist", split_file="nosuch.json")


def test_cli_data_commands_take_either_folder(tmp_path, mnist_dir, capsys):
    """README: `scalegmn data targets --data data/mnist-inrs`; `data splits --path data`; both
    commands take the other folder too and say which files they used."""
    import shutil
    from scalegmn.cli import main
    data = tmp_path / "data"
    shutil.copytree(mnist_dir, data)
    (data / "mnist_splits.json").unlink()
    for folder in (data, data / "mnist-inrs"):
        assert main(["data", "targets", "--data", str(folder), "--kind", "dilate"]) == 0
        out = capsys.readouterr().out
        assert f"using {data / 'mnist-inrs' / 'images.npz'}" in out
        t = np.load(data / "mnist-inrs" / "targets_dilate.npy")
        assert t.shape == (24, 8, 8)
        (data / "mnist-inrs" / "targets_dilate.npy").unlink()
        assert main(["data", "splits", "--path", str(folder)]) == 0
        assert f"wrote {data / 'mnist_splits.json'}" in capsys.readouterr().out
        assert len(load_dataset(folder, "dwsnets-mnist", "test")) == 6
        (data / "mnist_splits.json").unlink()


@pytest.mark.parametrize("argv, culprit", [
    (["data", "targets", "--data", "{tmp}"], "no images.npz in '{tmp}'"),
    (["data", "targets", "--data", "{tmp}/nosuch"], "missing folder: '{tmp}/nosuch'"),
    (["data", "splits", "--path", "{tmp}"], "'{tmp}' holds no mnist-inrs/ folder"),
    (["data", "splits", "--path", "{tmp}/nosuch/mnist-inrs"],
     "missing folder: '{tmp}/nosuch/mnist-inrs'"),
])
def test_cli_data_errors_are_one_line(tmp_path, argv, culprit):
    from scalegmn.cli import main
    argv = [a.format(tmp=tmp_path) for a in argv]
    with pytest.raises(SystemExit) as e:
        main(argv)
    msg = str(e.value.code)
    assert msg.startswith("error: ") and "\n" not in msg, msg
    assert culprit.format(tmp=tmp_path) in msg and "pass" in msg, msg


def test_cnn_zoo_says_which_split_file_ordered_its_rows(tmp_path):
    _zoo_fixture(tmp_path / "zoo")
    ds = Z.cnn_zoo(tmp_path / "zoo", "train")
    assert ds.source.endswith(f"row order from '{tmp_path / 'zoo' / 'zoo_split.csv'}'")
    (tmp_path / "zoo" / "zoo_split.csv").unlink()
    assert "no *_split.csv: rows in file order" in Z.cnn_zoo(tmp_path / "zoo", "train").source


def test_bad_progress_interval_names_the_variable(monkeypatch):
    from scalegmn.progress import bar
    monkeypatch.setenv("SCALEGMN_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="SCALEGMN_PROGRESS_INTERVAL.*'soon'"):
        bar(3, "x")


def test_formats_are_looked_up_in_one_table(tmp_path):
    """Every public format is registered in scalegmn.data.base.FORMATS by its own loader
    module; load_dataset looks it up there; an unknown one is refused listing them all."""
    from scalegmn.data import FORMATS, base, datasets
    assert FORMATS is base.FORMATS
    assert {n: f.__name__ for n, f in FORMATS.items()}.items() >= {
        "dwsnets-mnist": "dwsnets_mnist", "dwsnets-fmnist": "dwsnets_fmnist",
        "nfn-siren": "nfn_siren", "cnn-zoo": "cnn_zoo", "folder": "folder"}.items()
    with pytest.raises(ValueError, match=r"unknown format 'mnist'; choose from \[.*'cnn-zoo', "
                                         r"'dwsnets-fmnist', 'dwsnets-mnist', 'folder', "
                                         r"'nfn-siren'"):
        load_dataset(tmp_path, "mnist")
    with pytest.raises(ValueError, match="registered already.*datasets.folder"):
        base.register_format("folder")(lambda path, split=None: None)
    assert base.FORMATS["folder"] is datasets.folder


def test_inr_items_record_the_image_they_were_fitted_to(mnist_dir, digits, tmp_path):
    """dwsnets-mnist reads the image index from the mnist_png_*_{index} folders, nfn-siren
    from net{idx}.pth; items of other layouts refuse to guess (the error names the file)."""
    X, y = digits
    for split in ("train", "val", "test"):
        ds = load_dataset(mnist_dir, "dwsnets-mnist", split)
        for i, it in enumerate(ds.items):
            assert ds.image(i) == int(it.source.parent.parent.name.rsplit("_", 1)[1])
            assert int(ds[i].y) == int(y[ds.image(i)])
    G.generate_nfn_siren(tmp_path, "d", X[:6], y[:6], steps=2, chunk=8, progress=False)
    nfn = load_dataset(tmp_path / "siren_d_wts", "nfn-siren", "test", split_points=(2, 4))
    assert [nfn.image(i) for i in range(len(nfn))] == [4, 5]
    own = tmp_path / "own"
    own.mkdir()
    torch.save(C.to_state_dict(ds[0]), own / "net.pt")
    (own / "arch.json").write_text(ds[0].arch.to_json())
    (own / "labels.csv").write_text("file,label\nnet.pt,3\n")
    folder = load_dataset(own, "folder")
    assert len(folder) == 1
    with pytest.raises(ValueError, match="cannot tell which image '.*' was fitted to"):
        folder.image(0)
