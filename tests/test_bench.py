"""``scalegmn bench`` runs each measurement in its own process and reports them side by side."""
import json

from scalegmn.bench import main, run


def test_bench_tiny(tmp_path, capsys):
    table, rows = run(["scalegmn", "mlp"], ["sparse", "dense"], "cnn_zoo", 2, 8, 1, 1, 1,
                      tmp_path / "b.json")
    assert [(r["backend"], r["engine"]) for r in rows] == [("scalegmn", "sparse"),
                                                           ("scalegmn", "dense"), ("mlp", "-")]
    for r in rows:
        assert r["forward_s"] > 0 and r["forward_backward_s"] > 0 and r["peak_rss_mib"] > 0
        assert r["trainable"] > 0
    assert json.loads((tmp_path / "b.json").read_text()) == rows
    assert "graphs/s" in table
    assert main(["--backends", "gmn", "--engines", "dense", "--workload", "siren", "--batch",
                 "2", "--hidden", "8", "--layers", "1", "--repeats", "1"]) == 0
    assert "gmn" in capsys.readouterr().out
