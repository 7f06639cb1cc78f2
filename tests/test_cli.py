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
