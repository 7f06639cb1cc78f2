"""The ``scalegmn convert`` and ``scalegmn quickstart`` commands."""
import json

import pytest
import torch

import converters as C
from scalegmn.cli import main

MODEL_FILE = '''
import torch.nn as nn
def make():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 2))
'''


def test_convert_factory_file(tmp_path, capsys):
    src = tmp_path / "net.py"
    src.write_text(MODEL_FILE)
    out, png, spec = tmp_path / "g.pt", tmp_path / "g.png", tmp_path / "arch.json"
    assert main(["convert", f"{src}:make", "-o", str(out), "--draw", str(png),
                 "--arch-out", str(spec)]) == 0
    text = capsys.readouterr().out
    assert "nodes: 7" in text and "scale 4" in text and "fixed 3" in text
    g = C.load_graph(out)
    assert g.num_nodes == 7 and png.stat().st_size > 1000
    assert C.ArchSpec.from_json(spec.read_text()) == g.arch


def test_convert_state_dict_needs_arch(tmp_path, capsys):
    sd = C.models.Siren((2, 32, 32, 1)).state_dict()
    path = tmp_path / "model_final.pth"
    torch.save(sd, path)
    with pytest.raises(SystemExit, match="--arch"):
        main(["convert", str(path)])
    assert main(["convert", str(path), "--arch", 'siren(output_offset=0.5)']) == 0
    assert "sin" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not match|missing"):
        main(["convert", str(path), "--arch", "mlp(widths=[2, 8, 1])"])
    with pytest.raises(SystemExit, match="unknown arch builder"):
        main(["convert", str(path), "--arch", "resnet()"])


def test_pickled_model_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(C.models.mlp([3, 4, 1]), path)
    with pytest.raises(SystemExit, match="--trust"):
        main(["convert", str(path)])
    assert main(["convert", str(path), "--trust"]) == 0


def test_large_graphs_are_not_drawn(tmp_path, capsys):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\ndef make():\n    return nn.Sequential("
                   "nn.Linear(10, 300), nn.ReLU(), nn.Linear(300, 300), nn.ReLU(), "
                   "nn.Linear(300, 1))\n")
    assert main(["convert", f"{src}:make", "--draw", str(tmp_path / "big.png")]) == 0
    assert "not drawn" in capsys.readouterr().out
    assert not (tmp_path / "big.png").exists()


def test_unsupported_model_is_a_clean_error(tmp_path):
    src = tmp_path / "net.py"
    src.write_text("import torch.nn as nn\ndef make():\n    return nn.Sequential("
                   "nn.Linear(3, 4), nn.RReLU())\n")
    with pytest.raises(SystemExit, match="RReLU"):
        main(["convert", f"{src}:make"])


@pytest.mark.slow
def test_quickstart(tmp_path, monkeypatch):
    monkeypatch.setenv("SCALEGMN_CACHE", str(tmp_path / "cache"))
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--quick"]) == 0
    for f in ("robustness.png", "robustness.json", "scalegmn/summary.json",
              "mlp/plots/curves.png"):
        assert (tmp_path / "q" / f).exists(), f


# -- help, argument errors and the environment: no torch before a command runs -----------------
def _python(code, env_update=None, drop=("OMP_WAIT_POLICY",)):
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(env_update or {})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)


_PROBE = '''
import sys
from scalegmn.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print("TORCH_LOADED", "torch" in sys.modules)
'''


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["data", "--help"],
                                  ["data", "default", "--help"], ["convert", "--help"],
                                  ["eval", "--help"], ["train"], ["no-such-command"],
                                  ["train", "--config", "list"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    res = _python(_PROBE.format(argv=argv))
    assert "TORCH_LOADED False" in res.stdout, res.stdout + res.stderr
    assert "``" not in res.stdout + res.stderr       # no reST markup in the help


def test_module_help_does_not_import_torch():
    import subprocess
    import sys
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "scalegmn.cli", "--help"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "usage: scalegmn" in res.stdout
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in res.stderr.splitlines()
                if ln.startswith("import time:")]
    assert "scalegmn" in imported and "scalegmn.data.cli" in imported
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")]


def test_train_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "run directory" in text                 # --out
    assert "checkpoints/last.pt" in text           # --resume
    assert "torch device" in text                  # --device
    assert "--show" in text


def test_config_list_and_show(capsys):
    from scalegmn.train import list_configs
    from scalegmn.train.keys import KEY_HELP, config_keys
    assert set(KEY_HELP) == set(config_keys())     # every config field is documented
    assert main(["train", "--config", "list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(list_configs())
    for name, line in zip(list_configs(), lines):
        assert line.split()[0] == name and len(line.split()) > 3, line
    assert main(["train", "--config", "mnist_inr_scalegmn", "--set", "train.epochs=3",
                 "--show"]) == 0
    out = capsys.readouterr().out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines()[2:] if ln.split()}
    from scalegmn.train.config import load_config
    shown = config_keys(model=load_config("mnist_inr_scalegmn").model)
    for key in shown:
        assert key in rows, key
    assert "model.channels" not in rows      # a weight-space option: not read by ScaleGMN
    assert rows["train.epochs"][1:3] == ["3", "10"]          # value, default
    assert main(["train", "--config", "mnist_inr_np", "--show"]) == 0
    rows = {ln.split()[0] for ln in capsys.readouterr().out.splitlines()[2:] if ln.split()}
    assert "model.channels" in rows and "model.sign_inv" not in rows
    assert "AdamW learning rate" in out and "MNIST SIRENs" in out


_OMP_PROBE = '''
import os, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Spy())
from scalegmn.cli import main
main(["convert", {factory!r}])
print("AT_TORCH_IMPORT", seen)
'''


def test_entry_point_sets_passive_omp_before_torch_unless_the_user_did(tmp_path):
    src = tmp_path / "net.py"
    src.write_text(MODEL_FILE)
    res = _python(_OMP_PROBE.format(factory=f"{src}:make"))
    assert "AT_TORCH_IMPORT ['PASSIVE']" in res.stdout, res.stdout + res.stderr
    res = _python(_OMP_PROBE.format(factory=f"{src}:make"), {"OMP_WAIT_POLICY": "ACTIVE"})
    assert "AT_TORCH_IMPORT ['ACTIVE']" in res.stdout, res.stdout + res.stderr


RESIDUAL_FILE = '''
import torch, torch.nn as nn
class Res(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 2)
    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.c(torch.relu(self.b(h)) + h)
def make():
    return Res()
'''


def test_drawing_has_clear_title_edge_legend_and_visible_residual_edges():
    """converters.draw: the title clear of the node-set labels, a legend for node groups and
    one for edge types, residual edges curved in their own colour and style."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch
    from converters.draw import graph_figure
    scope = {}
    exec(RESIDUAL_FILE, scope)
    g = C.to_graph(scope["make"]())
    n_res = int((g.edge_type == C.EDGE_TYPES.index("residual")).sum())
    assert n_res > 0
    fig = graph_figure(g, title="a residual MLP")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title = ax.title.get_window_extent(renderer)
    labels = [t for t in ax.texts if t.get_text() in {ns["name"] for ns in g.arch.nodesets}]
    assert len(labels) == len(g.arch.nodesets)
    for t in labels:
        b = t.get_window_extent(renderer)
        assert not (title.x0 < b.x1 and b.x0 < title.x1 and title.y0 < b.y1 and b.y0 < title.y1)
    legends = [a for a in ax.get_children() if type(a).__name__ == "Legend"]
    titles = {lg.get_title().get_text(): [t.get_text() for t in lg.get_texts()]
              for lg in legends}
    assert titles["node group"] == ["fixed", "scale"]
    assert titles["edge type"] == ["weight", "residual (curved)"]
    curved = [p for p in ax.patches if isinstance(p, FancyArrowPatch)
              and getattr(p.get_connectionstyle(), "rad", 0) != 0]
    assert len(curved) == n_res
    weight_colour = ax.collections[0].get_edgecolor()[0][:3]
    assert all(tuple(p.get_edgecolor()[:3]) != tuple(weight_colour) for p in curved)
    assert all(p.get_linestyle() in ("--", "dashed") for p in curved)
    plt.close(fig)


# -- first use: one-line errors, the files a command promises, file modes ----------------------
@pytest.fixture(scope="module")
def tiny_inrs(tmp_path_factory):
    import numpy as np
    from scalegmn.data import generate as G
    from scalegmn.data import images as I
    out = tmp_path_factory.mktemp("inrs")
    X, y = I.sklearn_digits()
    G.generate_dwsnets_mnist(out, X[:30], y[:30], np.arange(30) < 20, steps=10, chunk=30,
                             val_size=4, progress=False)
    return out


def test_cli_errors_are_one_line_naming_the_culprit(tmp_path, capsys):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    torch.save({"model": {}}, tmp_path / "run" / "checkpoints" / "best.pt")
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    cases = [
        (["eval", "--checkpoint", "nosuch.pt"], "no checkpoint file 'nosuch.pt'",
         "checkpoints/best.pt"),
        (["eval", "--checkpoint", str(tmp_path / "run")], str(tmp_path / "run"),
         "did you mean --checkpoint " + str(tmp_path / "run" / "checkpoints" / "best.pt")),
        (["eval", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "best.pt")],
         "not a checkpoint of scalegmn train", "pass a run's"),
        (["eval", "--checkpoint", str(tmp_path / "junk.pt")], "cannot read checkpoint",
         "pass a run's"),
        (["report", str(tmp_path / "nosuch")], "nosuch/summary.json", "pass run directories"),
        (["train", "--out", str(tmp_path / "empty"), "--resume"], "nothing to resume",
         "pass --config"),
        (["convert", str(tmp_path / "nosuch.pt")], "no such file", "pass file.py:factory"),
    ]
    for argv, culprit, instead in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        msg = str(e.value.code)
        assert msg.startswith("error: ") and "\n" not in msg, (argv, msg)
        assert culprit in msg and instead in msg, (argv, msg)


def test_library_helpers_raise_exceptions_not_system_exit(tmp_path, monkeypatch):
    """Only the CLI turns errors into a message and an exit status; SCALEGMN_DEBUG=1 shows the
    exception instead."""
    from converters.arch import parse as parse_arch
    from converters.load import load_graph_source
    with pytest.raises(ValueError, match="unknown arch builder"):
        parse_arch("resnet()")
    with pytest.raises(FileNotFoundError, match="nosuch.pt"):
        load_graph_source(str(tmp_path / "nosuch.pt"))
    monkeypatch.setenv("SCALEGMN_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        main(["eval", "--checkpoint", str(tmp_path / "nosuch.pt")])


def test_written_files_get_the_usual_mode(tmp_path):
    """Graph files (atomic writes through a temporary file) are 0666 less the umask, like any
    file the user writes, not the temporary file's 0600; a replaced file keeps its mode."""
    import os
    import stat
    src = tmp_path / "net.py"
    src.write_text(MODEL_FILE)
    old = os.umask(0o022)
    try:
        assert main(["convert", f"{src}:make", "-o", str(tmp_path / "g.pt")]) == 0
        assert stat.S_IMODE((tmp_path / "g.pt").stat().st_mode) == 0o644
        os.chmod(tmp_path / "g.pt", 0o640)
        C.save_graph(tmp_path / "g.pt", C.load_graph(tmp_path / "g.pt"))
        assert stat.S_IMODE((tmp_path / "g.pt").stat().st_mode) == 0o640
        os.umask(0o077)
        C.save_graph(tmp_path / "h.pt", C.load_graph(tmp_path / "g.pt"))
        assert stat.S_IMODE((tmp_path / "h.pt").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_quickstart_writes_its_result_table(tmp_path, tiny_inrs, monkeypatch, capsys):
    """`scalegmn quickstart` promises a table in its output folder (here on tiny data)."""
    import scalegmn.quickstart as Q
    real = Q.load_config
    monkeypatch.setattr(Q, "load_config", lambda name, overrides=(): real(name, list(overrides) + [
        f"data.path={tiny_inrs}", "model.hidden=8", "model.layers=1", "train.epochs=1",
        "train.progress=false"]))
    monkeypatch.chdir(tmp_path)             # no runs/benchmark here
    assert main(["quickstart", "--out", str(tmp_path / "q"), "--quick"]) == 0
    printed = capsys.readouterr().out
    table = (tmp_path / "q" / "results.md").read_text()
    for backend in ("scalegmn", "gmn", "mlp"):
        row = next(ln for ln in table.splitlines() if ln.split()[:2] == ["inr_classification",
                                                                          backend])
        assert row in printed                       # the table that was printed
        assert next(ln for ln in table.splitlines() if ln.split()[:1] == [backend]) in printed
    assert "perm+sign" in table
    # the number in context: chance, this run's figures, the paper's, the cpu benchmark's
    summary = json.loads((tmp_path / "q" / "scalegmn" / "summary.json").read_text())
    mine = f"{100 * summary['test']['accuracy']:.1f} %"
    context = table[table.index("in context"):]
    assert "chance level (1/" in context and "96.6 %" in context
    assert next(ln for ln in context.splitlines() if "ScaleGMN (this run)" in ln).endswith(mine)
    assert "benchmark --suite cpu" in context and "not run here" in context
    # the share of test INRs whose class the actions change: none for ScaleGMN
    changes = json.loads((tmp_path / "q" / "prediction_changes.json").read_text())
    assert changes["scalegmn"] == {"perm": 0.0, "perm+sign": 0.0}
    moved = table[table.index("predicted class the same actions change"):]
    assert next(ln for ln in moved.splitlines() if ln.split()[:1] == ["scalegmn"]).split()[1:] \
        == ["0.0%", "0.0%"]
    assert moved.splitlines()[3].strip() in printed


RNN_FILE = '''
import torch.nn as nn
class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn, self.head = nn.{cls}(3, 4, batch_first=True), nn.Linear(4, 2)
    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])
def make():
    return Net()
'''


@pytest.mark.parametrize("cls", ["LSTM", "RNN"])
def test_drawing_styles_recurrent_and_state_edges(cls):
    """Recurrent edges (hidden -> gates; a plain RNN's self-loops) curved in their own colour
    and style, every one drawn; state edges (candidate -> hidden) dotted in their own colour;
    both in the edge legend (before: drawn as weights, missing from the legend)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch
    from converters.draw import graph_figure
    scope = {}
    exec(RNN_FILE.replace("{cls}", cls), scope)
    g = C.to_graph(scope["make"](), torch.zeros(2, 5, 3))
    count = {t: int((g.edge_type == C.EDGE_TYPES.index(t)).sum()) for t in C.EDGE_TYPES}
    fig = graph_figure(g)
    ax = fig.axes[0]
    legends = [a for a in ax.get_children() if type(a).__name__ == "Legend"]
    edge_legend = {lg.get_title().get_text(): [t.get_text() for t in lg.get_texts()]
                   for lg in legends}["edge type"]
    assert edge_legend == ["weight", "recurrent (curved)"] + (["state"] if cls == "LSTM" else [])
    curved = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(curved) == count["recurrent"] > 0
    colours = {tuple(p.get_edgecolor()[:3]) for p in curved}
    assert len(colours) == 1 and colours != {tuple(ax.collections[0].get_edgecolor()[0][:3])}
    if cls == "LSTM":
        dotted = [c for c in ax.collections if c.get_linestyle()[0][1] is not None
                  and len(c.get_segments()) == count["state"]
                  and tuple(c.get_edgecolor()[0][:3]) not in colours]
        assert dotted
    plt.close(fig)


def test_convert_summary_counts_no_state_edge_as_a_weight(tmp_path, capsys):
    """`scalegmn convert` prints the weight entries on edges: an LSTM's structural state edges
    (value 1) are not parameters (before: counted as weights)."""
    src = tmp_path / "rnn.py"
    src.write_text(RNN_FILE.replace("{cls}", "LSTM"))
    assert main(["convert", f"{src}:make", "--example-shape", "5,3"]) == 0
    out = capsys.readouterr().out
    scope = {}
    exec(RNN_FILE.replace("{cls}", "LSTM"), scope)
    n_weights = sum(p.numel() for k, p in scope["make"]().named_parameters() if "weight" in k)
    assert "state 4" in out
    assert f"weight entries on edges: {n_weights}\n" in out + "\n"
