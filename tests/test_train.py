"""The training loop: runs, resumes to the same result, rejects bad configs, reports."""
import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import converters as C
import scalegmn

from scalegmn.cli import main
from scalegmn.data import load_dataset
from scalegmn.data import generate as G
from scalegmn.data import images as I
from scalegmn.train import load_config
from scalegmn.train.loop import Runner


@pytest.fixture(scope="module")
def inr_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("inrs")
    X, y = I.sklearn_digits()
    X, y = X[:40], y[:40]
    G.generate_dwsnets_mnist(out, X, y, np.arange(40) < 30, steps=30, chunk=20, val_size=6,
                             progress=False)
    return out


def write_config(path, data_dir, **extra):
    cfg = {"task": "inr_classification",
           "data": {"format": "dwsnets-mnist", "path": str(data_dir), "batch_size": 8},
           "model": {"backend": "scalegmn", "hidden": 8, "layers": 1, "dropout": 0.1},
           "train": {"epochs": 3, "lr": 3e-3, "warmup_steps": 2, "progress": False,
                     "deterministic": True}}
    for k, v in extra.items():
        sec, key = k.split("__")
        cfg.setdefault(sec, {})[key] = v
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


class Killed(Exception):
    pass


def test_kill_and_resume_gives_the_same_result(tmp_path, inr_dir):
    cfg_path = write_config(tmp_path / "c.yaml", inr_dir)
    full = Runner(load_config(cfg_path), tmp_path / "full", log=lambda *a: None).fit()
    runner = Runner(load_config(cfg_path), tmp_path / "part", log=lambda *a: None)
    calls = {"n": 0}
    loss = runner.task.loss

    def dying(out, batch):
        calls["n"] += 1
        if calls["n"] == 5:          # in the middle of epoch 2 (3 batches per epoch)
            raise Killed()
        return loss(out, batch)
    runner.task.loss = dying
    with pytest.raises(Killed):
        runner.fit()
    resumed = Runner(load_config(cfg_path), tmp_path / "part", resume=True,
                     log=lambda *a: None)
    assert resumed.start_epoch == 1
    again = resumed.fit()
    assert again["test"] == full["test"] and again["best_val"] == full["best_val"]
    a = torch.load(tmp_path / "full" / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "part" / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2, 3]
    assert (tmp_path / "part" / "plots" / "curves.png").exists()


def test_bad_configs_fail_before_training(tmp_path, inr_dir, capsys):
    good = write_config(tmp_path / "c.yaml", inr_dir)
    with pytest.raises(ValueError, match="model.hiden"):
        load_config(good, ["model.hiden=3"])
    with pytest.raises(ValueError, match="train.lr"):
        load_config(good, ["train.lr=fast"])
    with pytest.raises(ValueError, match="data.path.*/no/such"):
        load_config(good, ["data.path=/no/such"])
    with pytest.raises(ValueError, match="task"):
        load_config(good, ["task=dreaming"])
    with pytest.raises(SystemExit, match="model.*readout"):
        main(["train", "--config", good, "--out", str(tmp_path / "x"), "--set",
              "model.readout=mean"])
    assert not (tmp_path / "x").exists()
    assert main(["train", "--config", good, "--out", str(tmp_path / "d"), "--dry-run"]) == 0
    assert "trainable parameters" in capsys.readouterr().out
    assert main(["train", "--config", "list"]) == 0
    assert "mnist_inr_scalegmn" in capsys.readouterr().out


def test_train_eval_report_and_robustness(tmp_path, inr_dir, capsys):
    for backend, extra in (("scalegmn", {}), ("mlp", {"model__hidden": 32})):
        for seed in (0, 1):
            cfg = write_config(tmp_path / f"{backend}{seed}.yaml", inr_dir,
                               model__backend=backend, train__seed=seed, train__epochs=1,
                               **extra)
            assert main(["train", "--config", cfg, "--out", str(tmp_path / f"{backend}{seed}")]) == 0
    ck = tmp_path / "scalegmn0" / "checkpoints" / "best.pt"
    assert main(["eval", "--checkpoint", str(ck), "--robustness"]) == 0
    out = capsys.readouterr().out
    assert '"accuracy"' in out and "perm+sign" in out
    rob = json.loads((tmp_path / "scalegmn0" / "robustness.json").read_text())
    assert rob["perm+sign"] == pytest.approx(rob["none"], abs=1e-6)   # symmetric model
    assert main(["report"] + [str(tmp_path / n) for n in ("scalegmn0", "scalegmn1", "mlp0",
                                                          "mlp1")] + ["--out",
                                                                      str(tmp_path / "rep")]) == 0
    table = capsys.readouterr().out
    assert "scalegmn" in table and "mlp" in table and (tmp_path / "rep" / "report.png").exists()


def test_editing_task_runs(tmp_path, inr_dir):
    cfgd = {"task": "inr_editing",
            "data": {"format": "dwsnets-mnist", "path": str(inr_dir), "batch_size": 8,
                     "editing": "dilate", "limit": 16},
            "model": {"backend": "scalegmn", "hidden": 8, "layers": 2},
            "train": {"epochs": 1, "progress": False}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfgd))
    run = Runner(load_config(str(tmp_path / "e.yaml")), tmp_path / "edit", log=lambda *a: None)
    s = run.fit()
    assert s["metric"] == "mse" and 0 < s["test"]["mse"] < 1
    # the reference level: the test networks left unedited; the model with its edit scales set
    # to 0 (an identity edit, through the edit head) scores exactly that
    ref = s["reference"]
    assert ref["name"] == "unedited" and 0 < ref["test"]["mse"] < 1
    with torch.no_grad():
        run.model.edit.alpha.zero_()
        run.model.edit.beta.zero_()
    assert abs(run.evaluate(run.data["test"])["mse"] - ref["test"]["mse"]) < 1e-7
    assert json.loads((tmp_path / "edit" / "summary.json").read_text())["reference"] == ref


def test_shipped_configs_validate():
    from scalegmn.train import list_configs
    names = list_configs()
    assert {"mnist_inr_scalegmn", "mnist_inr_scalegmn_b", "mnist_inr_mlp",
            "zoo_generalization_scalegmn_relu", "mnist_editing_scalegmn"} <= set(names)
    assert {"zoo_generalization_monomial_nfn_relu", "zoo_generalization_magep_nfn_tanh",
            "mnist_inr_np", "mnist_inr_hnp", "zoo_generalization_statnn_relu",
            "mnist_editing_monomial_nfn"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.model.backend in scalegmn.registry.backends()
        # the model builds for (and reads) the networks of its data format
        if cfg.data.format == "cnn-zoo":
            graph = C.to_graph(C.models.cnn_zoo(activation=cfg.data.options["activation"]))
        else:
            graph = C.to_graph(C.models.Siren((2, 32, 32, 1), 30.0, 0.5, "dwsnets"))
        arch = graph.arch
        task = "equivariant" if cfg.task == "inr_editing" else "invariant"
        assert cfg.model.task == task
        net = scalegmn.build(spec=arch, config=cfg.model.replace(out_dim=cfg.model.out_dim or 3))
        out = net(C.batch_graphs([graph, graph]))
        assert (out.shape[0] if task == "invariant" else out.num_graphs) == 2


@pytest.mark.parametrize("backend", ["monomial-nfn", "magep-nfn", "hnp", "statnn"])
def test_generalization_task_runs_for_parameter_sharing_backends(tmp_path, backend):
    """The CNN-zoo protocol (split, loss, Kendall tau) is the same for every backend."""
    from scalegmn.data import zoo as Z
    torch.manual_seed(0)
    rows, metrics = [], []
    for i in range(24):
        m = C.models.cnn_zoo(activation="relu")
        rows.append(Z.state_dict_to_row(m.state_dict()))
        metrics.append({"config.activation": "relu", "step": 86, "modeldir": f"net_{i}",
                        "test_accuracy": round(0.1 + 0.03 * i, 4)})
    Z.write_zoo(tmp_path / "zoo", np.stack(rows), metrics,
                split=list(np.random.default_rng(0).permutation(24)))
    cfgd = {"task": "generalization",
            "data": {"format": "cnn-zoo", "path": str(tmp_path / "zoo"), "batch_size": 4,
                     "options": {"activation": "relu"}},
            "model": {"backend": backend, "hidden": 4, "layers": 1, "head_hidden": 8},
            "train": {"epochs": 1, "progress": False}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(cfgd))
    s = Runner(load_config(str(tmp_path / "g.yaml")), tmp_path / "run", log=lambda *a: None).fit()
    assert s["backend"] == backend and -1 <= s["test"]["kendall_tau"] <= 1


def test_editing_task_runs_for_monomial_nfn(tmp_path, inr_dir):
    cfgd = {"task": "inr_editing",
            "data": {"format": "dwsnets-mnist", "path": str(inr_dir), "batch_size": 8,
                     "editing": "dilate", "limit": 16},
            "model": {"backend": "monomial-nfn", "channels": [4, 4]},
            "train": {"epochs": 1, "progress": False}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfgd))
    s = Runner(load_config(str(tmp_path / "e.yaml")), tmp_path / "edit",
               log=lambda *a: None).fit()
    assert s["backend"] == "monomial-nfn" and 0 < s["test"]["mse"] < 1


# -- the README's command sequence, as a newcomer types it --------------------------------------
def _tiny(inr_dir, *extra):
    """--set values that make the shipped MNIST-INR configs tiny (the built-in data set replaced
    by the module's 40 SIRENs)."""
    return ["--set", f"data.path={inr_dir}", "model.hidden=8", "model.layers=1",
            "train.progress=false", *extra]


def test_a_checkpoint_older_than_a_config_key_resumes_with_its_default(tmp_path, inr_dir):
    # a run interrupted before ``model.pair_messages`` existed could not be resumed ("is True
    # here but None in the checkpoint"): keys a checkpoint predates take their defaults
    out = tmp_path / "sg"
    assert main(["train", "--config", "mnist_inr_scalegmn", "--out", str(out)]
                + _tiny(inr_dir, "train.epochs=1")) == 0
    last = out / "checkpoints" / "last.pt"
    st = torch.load(last, weights_only=False)
    del st["config"]["model"]["pair_messages"]
    torch.save(st, last)
    assert main(["train", "--out", str(out), "--resume", "--set", "train.epochs=2"]) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    with pytest.raises(SystemExit, match="model.hidden"):   # a key the checkpoint has binds
        main(["train", "--out", str(out), "--resume", "--set", "train.epochs=3",
              "model.hidden=64"])


def test_resume_uses_the_runs_own_config(tmp_path, inr_dir, capsys):
    """README: train with --set model.hidden=..., then resume without those --set values."""
    out = str(tmp_path / "sg")
    assert main(["train", "--config", "mnist_inr_scalegmn", "--out", out]
                + _tiny(inr_dir, "train.epochs=1")) == 0
    # the README's resume line: no --set; the model must be the run's (hidden 8), not the
    # shipped config's (hidden 32)
    assert main(["train", "--config", "mnist_inr_scalegmn", "--out", out, "--resume",
                 "--set", "train.epochs=2"]) == 0
    text = capsys.readouterr().out
    assert "resumed from epoch 1" in text
    saved = yaml.safe_load((tmp_path / "sg" / "config.yaml").read_text())
    assert saved["model"]["hidden"] == 8 and saved["train"]["epochs"] == 2
    lines = (tmp_path / "sg" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["epoch"] for ln in lines] == [1, 2]
    # contradictions are refused, naming the key, and the run directory is left as it was
    files = [tmp_path / "sg" / f for f in ("config.yaml", "metrics.jsonl", "checkpoints/last.pt")]
    before = [(f.read_bytes(), f.stat().st_mtime_ns) for f in files]
    with pytest.raises(SystemExit, match=r"model\.hidden=64.*model\.hidden: 8") as e:
        main(["train", "--config", "mnist_inr_scalegmn", "--out", out, "--resume", "--set",
              "model.hidden=64"])
    assert "\n" not in str(e.value)
    with pytest.raises(SystemExit, match="model.backend 'mlp'"):
        main(["train", "--config", "mnist_inr_mlp", "--out", out, "--resume"])
    with pytest.raises(SystemExit, match="train.dtype"):
        main(["train", "--out", out, "--resume", "--dtype", "float64"])
    # the library refuses a contradicting config too, before writing anything
    other = load_config("mnist_inr_scalegmn", ["model.hidden=16", f"data.path={inr_dir}",
                                               "model.layers=1", "train.progress=false"])
    with pytest.raises(ValueError, match="model.hidden"):
        Runner(other, tmp_path / "sg", resume=True, log=lambda *a: None)
    assert [(f.read_bytes(), f.stat().st_mtime_ns) for f in files] == before
    # --config may be left out on --resume; with neither there is nothing to resume
    assert main(["train", "--out", out, "--resume", "--set", "train.epochs=2"]) == 0
    with pytest.raises(SystemExit, match="nothing to resume in .*--config"):
        main(["train", "--out", str(tmp_path / "empty"), "--resume"])


def test_readme_sequence_train_resume_eval_report(tmp_path, inr_dir, capsys):
    """README, Training: train -> resume -> eval -> report, in-process, tiny settings."""
    old_umask = os.umask(0o022)
    try:
        run = tmp_path / "runs" / "sg"
        assert main(["train", "--config", "mnist_inr_scalegmn", "--out", str(run)]
                    + _tiny(inr_dir, "train.epochs=1")) == 0
        assert main(["train", "--config", "mnist_inr_scalegmn", "--out", str(run), "--resume",
                     "--set", "train.epochs=2"]) == 0
        text = capsys.readouterr().out
        assert text.count("run directory") == 2
        assert f"splits from '{inr_dir / 'mnist_splits.json'}'" in text     # which data
        assert main(["eval", "--checkpoint", str(run / "checkpoints" / "best.pt"), "--split",
                     "test", "--robustness"]) == 0
        res = capsys.readouterr().out
        assert '"split": "test"' in res and "perm+sign" in res
        assert main(["report", str(run), "--out", str(tmp_path / "runs" / "report")]) == 0
        table = capsys.readouterr().out.splitlines()
        row = next(ln for ln in table if "scalegmn" in ln).split()
        assert row[2] == "1" and row[4:] == ["n/a", "n/a"]      # one run: no spread
        assert (tmp_path / "runs" / "report" / "report.png").exists()
        # the saved config holds the output size the model was built with (10 digits)
        labels = [int(g.y) for g in load_dataset(inr_dir, "dwsnets-mnist", "train")]
        saved = yaml.safe_load((run / "config.yaml").read_text())
        assert saved["model"]["out_dim"] == max(labels) + 1 == 10
        assert torch.load(run / "checkpoints" / "last.pt", weights_only=False)[
            "config"]["model"]["out_dim"] == 10
        # files get the usual mode (0666 less the umask), not a temporary file's 0600
        for f in ("checkpoints/last.pt", "checkpoints/best.pt", "config.yaml", "metrics.jsonl"):
            assert stat.S_IMODE((run / f).stat().st_mode) == 0o644, f
    finally:
        os.umask(old_umask)


def test_report_of_one_run_says_na_and_library_errors_are_exceptions(tmp_path):
    from scalegmn.train.report import report
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(json.dumps(
        {"task": "inr_classification", "backend": "scalegmn", "metric": "accuracy",
         "test": {"accuracy": 0.5}}))
    assert report([tmp_path / "a"]).splitlines()[1].split()[-2:] == ["n/a", "n/a"]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text((tmp_path / "a" / "summary.json").read_text()
                                                 .replace("0.5", "0.7"))
    row = report([tmp_path / "a", tmp_path / "b"]).splitlines()[1].split()
    assert row[3:] == ["0.6000", "0.1414", "0.1000"]
    with pytest.raises(FileNotFoundError, match="nosuch"):      # not SystemExit
        report([tmp_path / "nosuch"])
    with pytest.raises(SystemExit, match="nosuch.*not a finished run"):
        main(["report", str(tmp_path / "nosuch")])


def test_activation_estimate_matches_a_measurement(inr_dir, capsys):
    """The summary's activation figure against the allocation peak of one training step at the
    configured batch size (the flat MLP was estimated at 2,620 MiB with a graph formula)."""
    from scalegmn.bench import memory_view
    for name, extra in (("mnist_inr_mlp", []), ("mnist_inr_scalegmn", ["model.hidden=16"])):
        cfg = load_config(name, [f"data.path={inr_dir}", "train.progress=false",
                                 "data.batch_size=16"] + extra)
        runner = Runner(cfg, "unused", dry_run=True)
        est = float(re.search(r"~([\d.]+) MiB of activations per batch of 16",
                              capsys.readouterr().out).group(1))
        batch = C.batch_graphs(runner.data["train"][:16])
        runner.model.train()

        def step():
            runner.task.loss(runner.model(batch), batch).backward()
        step()                                  # warm-up (lazy buffers, engine caches)
        runner.model.zero_grad(set_to_none=True)
        peak = memory_view(step)["alloc_peak_mib"]
        grads = sum(p.numel() * p.element_size() for p in runner.model.parameters()) / 2**20
        # the peak holds the saved activations plus the gradients (and a little scratch)
        assert est <= peak * 1.05 + 0.1, (name, est, peak)
        assert est >= (peak - grads) * 0.8 - 0.1, (name, est, peak, grads)


# -- progress feedback -----------------------------------------------------------------------
def test_training_and_robustness_report_progress(tmp_path, inr_dir, capsys, monkeypatch):
    """Epochs, validation, test and robustness evaluation show rate and ETA on stderr (plain
    lines: stderr is not a terminal here), and each epoch's log line has its rate and the time
    left."""
    import scalegmn.progress as P
    from scalegmn.train import robustness as R
    monkeypatch.setenv("SCALEGMN_PROGRESS_INTERVAL", "0")
    monkeypatch.setattr(P, "QUIET_SECONDS", 0.0)
    cfg = load_config(write_config(tmp_path / "p.yaml", inr_dir, train__progress=True,
                                   train__epochs=2))
    logged = []
    runner = Runner(cfg, tmp_path / "p", log=logged.append)
    runner.fit()
    R.robustness(runner)
    err = capsys.readouterr().err
    assert "\r" not in err
    for desc in ("epoch 1/2", "epoch 2/2", "validating", "testing", "robustness: perm+sign"):
        line = next((ln for ln in err.splitlines() if ln.startswith(desc)), None)
        assert line is not None and "batch/s" in line and "<" in line, (desc, err)
    epoch_lines = [ln for ln in logged if ln.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "nets/s" in epoch_lines[0]
    assert "left" in epoch_lines[0] and "left" not in epoch_lines[1]
    # in a log, lines come every SCALEGMN_PROGRESS_INTERVAL seconds, not at every batch
    monkeypatch.setenv("SCALEGMN_PROGRESS_INTERVAL", "1000")
    cfg.train.epochs = 1
    Runner(cfg, tmp_path / "p1", log=logged.append).fit()
    err = capsys.readouterr().err
    assert len([ln for ln in err.splitlines() if ln.startswith("epoch 1/1")]) == 1, err


def test_quickstart_shows_progress(tmp_path, monkeypatch):
    """The quickstart used to switch progress off: minutes of silence while making data."""
    import scalegmn.quickstart as Q
    seen = []

    class Stop(Exception):
        pass

    def fake_runner(cfg, out, *a, **k):
        seen.append(cfg.train.progress)
        raise Stop

    monkeypatch.setattr(Q, "Runner", fake_runner)
    with pytest.raises(Stop):
        Q.run(tmp_path / "q", quick=True)
    assert seen == [True]


# -- plots (figure objects, not pixels) --------------------------------------------------------
def _overlap(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_robustness_plot_names_accuracy_draws_chance_and_keeps_bars_clear():
    import matplotlib.pyplot as plt
    from scalegmn.train import robustness as R
    results = {"scalegmn": {"none": 0.95, "perm": 0.95, "perm+sign": 0.95},
               "mlp": {"none": 0.97, "perm": 0.12, "perm+sign": 0.10}}
    fig = R.figure(results, "accuracy", chance=0.1)
    ax = fig.axes[0]
    assert "accuracy" in ax.get_title() and "metric" not in ax.get_title()
    assert ax.get_ylabel() == "test accuracy"
    chance = [ln for ln in ax.get_lines() if set(ln.get_ydata()) == {0.1}]
    assert len(chance) == 1
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["scalegmn", "mlp", "chance (1/10)"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = legend.get_window_extent(renderer)
    bars = [p for p in ax.patches]
    assert len(bars) == 6
    assert not any(_overlap(box, b.get_window_extent(renderer)) for b in bars)
    plt.close(fig)
    fig = R.figure(results, "kendall_tau")          # no chance line for other metrics
    assert "kendall_tau" in fig.axes[0].get_title()
    assert not [ln for ln in fig.axes[0].get_lines() if len(set(ln.get_ydata())) == 1]
    plt.close(fig)


def test_prediction_changes_are_zero_for_scalegmn_and_not_for_the_mlp(tmp_path, inr_dir):
    """The share of test networks whose class a random permutation + sign flip changes: none
    for ScaleGMN (classification, and the edited image of the editing task), some for the flat
    MLP (the negative control: the measure would catch a model that ignores the group)."""
    from scalegmn.train import robustness as R
    changes = {}
    for backend, extra in (("scalegmn", {}), ("mlp", {"model__hidden": 32})):
        cfg = load_config(write_config(tmp_path / f"{backend}.yaml", inr_dir,
                                       model__backend=backend, train__epochs=2, **extra))
        runner = Runner(cfg, tmp_path / backend, log=lambda *a: None)
        runner.fit()
        changes[backend] = R.prediction_changes(runner)
    assert set(changes["scalegmn"]) == {"perm", "perm+sign"}
    assert changes["scalegmn"] == {"perm": 0.0, "perm+sign": 0.0}
    assert changes["mlp"]["perm+sign"] > 0.1, changes
    for backend, extra in (("scalegmn", {}), ("mlp", {"hidden": 32})):    # the edited images
        cfgd = {"task": "inr_editing",
                "data": {"format": "dwsnets-mnist", "path": str(inr_dir), "batch_size": 8,
                         "editing": "dilate", "limit": 16},
                "model": {"backend": backend, "hidden": 8, "layers": 2, **extra},
                "train": {"epochs": 1, "progress": False}}
        (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfgd))
        runner = Runner(load_config(str(tmp_path / "e.yaml")), tmp_path / f"edit-{backend}",
                        log=lambda *a: None)
        runner.fit()
        changes[f"edit-{backend}"] = R.prediction_changes(runner)
    assert changes["edit-scalegmn"] == {"perm": 0.0, "perm+sign": 0.0}
    assert changes["edit-mlp"]["perm+sign"] > 0.1, changes


def test_from_checkpoint_reads_a_checkpoint_whose_config_is_in_the_old_form(tmp_path, inr_dir):
    """Checkpoints written before the per-family model configs hold every family's keys and
    ``extra``: ``Runner.from_checkpoint`` (``scalegmn eval``, the benchmark's measure of
    prediction changes) reads them as ``--resume`` does ("unknown config key 'model.channels'
    for backend 'gmn'" before)."""
    from scalegmn.config import ScaleGMNConfig
    cfg = load_config(write_config(tmp_path / "c.yaml", inr_dir, model__backend="gmn",
                                   train__epochs=1))
    runner = Runner(cfg, tmp_path / "run", log=lambda *a: None)
    runner.fit()
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["model"] = {**ScaleGMNConfig().to_dict(), **ckpt["config"]["model"],
                               "channels": [8, 8], "head_hidden": 16, "extra": {}}
    torch.save(ckpt, path)
    again = Runner.from_checkpoint(path)
    test = runner.data["test"]
    assert again.evaluate(test) == runner.evaluate(test)
    ckpt["config"]["model"].pop("extra")      # today's form with a foreign key: refused
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="model.channels"):
        Runner.from_checkpoint(path)
    # an old editing run: its model section said task: invariant (the build overwrote it then)
    cfgd = {"task": "inr_editing",
            "data": {"format": "dwsnets-mnist", "path": str(inr_dir), "batch_size": 8,
                     "editing": "dilate", "limit": 16},
            "model": {"backend": "monomial-nfn"}, "train": {"epochs": 1, "progress": False}}
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(cfgd))
    runner = Runner(load_config(str(tmp_path / "e.yaml")), tmp_path / "edit", log=lambda *a: None)
    runner.fit()
    path = tmp_path / "edit" / "checkpoints" / "best.pt"
    ckpt = torch.load(path, weights_only=False)
    ckpt["config"]["model"] = {**ckpt["config"]["model"], "task": "invariant", "extra": {}}
    torch.save(ckpt, path)
    again = Runner.from_checkpoint(path)
    assert again.evaluate(runner.data["test"]) == runner.evaluate(runner.data["test"])


def test_the_precision_example_compares_float32_and_float64(tmp_path, inr_dir, capsys):
    """examples/prediction_changes_precision.py on a tiny run: one line per precision and
    action (permutations and sign flips of SIRENs), and ScaleGMN's classes never change."""
    import runpy
    cfg = load_config(write_config(tmp_path / "c.yaml", inr_dir, train__epochs=1))
    Runner(cfg, tmp_path / "run", log=lambda *a: None).fit()
    example = Path(__file__).resolve().parents[1] / "examples" / "prediction_changes_precision.py"
    fns = runpy.run_path(str(example))
    fns["main"](str(tmp_path / "run" / "checkpoints" / "best.pt"), 8)
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[:2] for ln in lines] == [["torch.float32", "perm"],
                                                ["torch.float32", "perm+sign"],
                                                ["torch.float64", "perm"],
                                                ["torch.float64", "perm+sign"]]
    assert all(ln.endswith("changed 0.0 %") for ln in lines)
    fns["backward_edge_modes"](str(tmp_path / "run" / "checkpoints" / "best.pt"), 8)
    modes = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in modes] == ["backward_edges=reciprocal",
                                               "backward_edges=division_free"]
    assert all(ln.endswith("perm 0.0 %, perm+sign 0.0 %") for ln in modes)


def test_robustness_chance_level_is_one_over_classes(tmp_path, inr_dir):
    from scalegmn.train import robustness as R
    runner = Runner(load_config(write_config(tmp_path / "c.yaml", inr_dir)), tmp_path / "c",
                    dry_run=True, log=lambda *a: None)
    assert R.chance_level(runner) == pytest.approx(1 / 10)


def test_curves_name_the_run_and_model(tmp_path):
    import matplotlib.pyplot as plt
    from scalegmn.train.loop import curves_figure, plot_curves
    run = tmp_path / "sg-seed3"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(
        {"task": "inr_classification", "data": {"format": "dwsnets-mnist"},
         "model": {"backend": "scalegmn", "hidden": 32, "layers": 3}}))
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"epoch": e, "train_loss": 2.0 / e, "val_accuracy": 0.1 * e}) + "\n"
                for e in (1, 2, 3)))
    fig = curves_figure(run)
    title = fig._suptitle.get_text()
    assert "sg-seed3" in title and "scalegmn" in title and "hidden 32" in title
    assert [ax.get_title() for ax in fig.axes] == ["train loss", "val accuracy"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    tb, fb = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert fb.x0 <= tb.x0 and tb.x1 <= fb.x1                   # the title fits
    assert not any(_overlap(tb, ax.title.get_window_extent(renderer)) for ax in fig.axes)
    plt.close(fig)
    assert plot_curves(run).exists()


def test_editing_targets_come_from_the_data_sets_own_images(tmp_path, inr_dir, capsys):
    """data/ holding a second data set's images.npz beside mnist-inrs/: the targets are made
    from mnist-inrs/images.npz (the images the SIRENs were fitted to), and the run says so."""
    import shutil
    from scalegmn.data.generate import editing_targets
    data = tmp_path / "data"
    shutil.copytree(inr_dir, data)
    real = np.load(data / "mnist-inrs" / "images.npz")["images"]
    for other in ("aaa", "fmnist_inrs", "zzz"):          # decoys on every side of mnist-inrs
        (data / other).mkdir()
        np.savez(data / other / "images.npz", images=255 - real)
    cfg = load_config(write_config(tmp_path / "e.yaml", data),
                      ["task=inr_editing", "data.limit=4"])
    runner = Runner(cfg, tmp_path / "run", dry_run=True)
    assert f"of the images in '{data / 'mnist-inrs' / 'images.npz'}'" in capsys.readouterr().out
    want = editing_targets(real, "dilate")
    ds = load_dataset(data, "dwsnets-mnist", "train")
    for g, item in zip(runner.data["train"], ds.items):
        idx = int(Path(item[0]).parent.parent.name.split("_")[-1])
        assert torch.equal(g.target[0], torch.tensor(want[idx], dtype=torch.float32))


def test_resume_after_the_data_moved(tmp_path, inr_dir, monkeypatch, capsys):
    """A run started with a relative data.path, resumed from another folder: the error says how
    to point at the data, and data.path is one of the keys a resume may change (listed in
    train --help)."""
    from scalegmn.train.config import RESUMABLE_KEYS
    (tmp_path / "start").mkdir()
    (tmp_path / "start" / "data").symlink_to(inr_dir)
    monkeypatch.chdir(tmp_path / "start")
    assert main(["train", "--config", "mnist_inr_mlp", "--out", str(tmp_path / "mlp"), "--set",
                 "data.path=data", "model.hidden=16", "train.epochs=1",
                 "train.progress=false"]) == 0
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="'data'.*--set data.path=WHERE_IT_IS_NOW"):
        main(["train", "--out", str(tmp_path / "mlp"), "--resume", "--set", "train.epochs=2"])
    assert main(["train", "--out", str(tmp_path / "mlp"), "--resume", "--set", "train.epochs=2",
                 f"data.path={inr_dir}"]) == 0
    assert "resumed from epoch 1" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(k in text for k in RESUMABLE_KEYS)


def test_set_accepts_floats_yaml_reads_as_strings():
    """``--set train.lr=1e-3``: YAML 1.1 reads ``1e-3`` (no dot) as a string; a float key takes
    it as the number, and a word is still refused naming the key."""
    from scalegmn.train.config import load_config
    assert load_config("mnist_inr_scalegmn", ["train.lr=1e-3"]).train.lr == 1e-3
    assert load_config("mnist_inr_scalegmn", ["train.lr=-2.5E+2"]).train.lr == -250.0
    with pytest.raises(ValueError, match="train.lr"):
        load_config("mnist_inr_scalegmn", ["train.lr=fast"])


def test_editing_targets_follow_the_image_each_item_records(tmp_path, inr_dir, monkeypatch):
    """The loop takes each network's source image from its data set item (set by the loader
    that knows the layout), never from the file's path: a format registered here whose items
    name other images than their folders gets those images' targets."""
    from scalegmn.data import base, datasets
    from scalegmn.data.generate import editing_targets

    def shifted(path, split="train", **kw):
        ds = datasets.dwsnets_mnist(path, split, **kw)
        ds.items = [it._replace(image=(it.image + 7) % 40) for it in ds.items]
        return ds
    monkeypatch.setitem(base.FORMATS, "shifted-inrs", shifted)
    cfg = load_config(write_config(tmp_path / "e.yaml", inr_dir, data__format="shifted-inrs"),
                      ["task=inr_editing", "data.limit=4"])
    runner = Runner(cfg, tmp_path / "run", dry_run=True, log=lambda *a: None)
    want = editing_targets(np.load(inr_dir / "mnist-inrs" / "images.npz")["images"], "dilate")
    ds = shifted(inr_dir, "train")
    assert len(runner.data["train"]) == 4
    for g, item in zip(runner.data["train"], ds.items):
        assert item.image != int(item.source.parent.parent.name.rsplit("_", 1)[1])
        assert torch.equal(g.target[0], torch.tensor(want[item.image], dtype=torch.float32))
