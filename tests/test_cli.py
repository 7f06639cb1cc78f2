"""The ``scalegmn convert`` and ``scalegmn quickstart`` commands."""
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
                   "nn.Linear(3, 4), nn.PReLU())\n")
    with pytest.raises(SystemExit, match="PReLU"):
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
    for key in config_keys():
        assert key in rows, key
    assert rows["train.epochs"][1:3] == ["3", "10"]          # value, default
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


def test_drawing_has_clear_title_edge_legend_and_visible_residual_edges(tmp_path):
    """converters.draw: the title clear of the node-set labels, a legend for node groups and
    one for edge types, residual edges curved in their own colour and style."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch
    from converters.draw import graph_figure
    from scalegmn.cli import load_graph_source
    src = tmp_path / "res.py"
    src.write_text(RESIDUAL_FILE)
    g = load_graph_source(f"{src}:make")
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
