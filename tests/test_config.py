"""Model configs: one class per backend family, one validator, no silent overwrites."""
import dataclasses

import pytest

import converters as C
import scalegmn
from scalegmn.config import (ExecutionConfig, ModelConfig, ScaleGMNConfig, WeightSpaceConfig,
                             upgrade_legacy)
from scalegmn.train.config import load_config

SPEC = C.arch.mlp([2, 4, 1])


@pytest.mark.parametrize("backend, cls", [("scalegmn", ScaleGMNConfig),
                                          ("scalegmn-b", ScaleGMNConfig),
                                          ("gmn", ScaleGMNConfig),
                                          ("monomial-nfn", WeightSpaceConfig),
                                          ("np", WeightSpaceConfig), ("mlp", ModelConfig)])
def test_the_backend_picks_its_family_and_the_flat_form_round_trips(backend, cls):
    cfg = ModelConfig.from_dict({"backend": backend, "hidden": 7})
    assert type(cfg) is cls and cfg.hidden == 7
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert set(cfg.to_dict()) == set(cls.keys())


def test_execution_options_are_flat_keys_of_a_nested_config():
    cfg = ModelConfig.from_dict({"backend": "scalegmn", "engine": "dense", "checkpoint": True})
    assert cfg.execution == ExecutionConfig(engine="dense", checkpoint=True)
    assert cfg.to_dict()["engine"] == "dense" and "execution" not in cfg.to_dict()
    assert cfg.replace(engine="sparse").execution.engine == "sparse"


def test_keys_of_another_family_unknown_keys_and_bad_values_are_refused_by_name():
    with pytest.raises(ValueError, match=r"'model.sign_inv' for backend 'monomial-nfn' \(it is a "
                                         r"ScaleGMNConfig option"):
        ModelConfig.from_dict({"backend": "monomial-nfn", "sign_inv": "abs"})
    with pytest.raises(ValueError, match="'model.engine' for backend 'np'"):
        ModelConfig.from_dict({"backend": "np", "engine": "dense"})
    with pytest.raises(ValueError, match="'model.hiden'.*known"):
        ModelConfig.from_dict({"backend": "scalegmn", "hiden": 3})
    with pytest.raises(ValueError, match="'model.hidden' must be int"):
        ModelConfig.from_dict({"hidden": "wide"})
    with pytest.raises(ValueError, match="'model.channels' must be a list"):
        ModelConfig.from_dict({"backend": "hnp", "channels": 8})
    with pytest.raises(ValueError, match="engine='fast'"):
        ModelConfig.from_dict({"engine": "fast"})
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        ModelConfig.from_dict({"backend": "nope"})
    with pytest.raises(ValueError, match="extra"):      # the unread free-form field is gone
        ModelConfig.from_dict({"extra": {}})


def test_configs_are_frozen():
    cfg = ScaleGMNConfig(out_dim=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.hidden = 3


def test_build_takes_a_config_as_it_is_and_refuses_contradictions():
    cfg = ScaleGMNConfig(backend="scalegmn-b", out_dim=3, hidden=8, layers=2)
    net = scalegmn.build(spec=SPEC, config=cfg)
    assert net.cfg is cfg
    assert scalegmn.build(spec=SPEC, config=cfg, hidden=6).cfg.hidden == 6
    with pytest.raises(ValueError, match=r"build\(task='equivariant'\) contradicts "
                                         r"config.task='invariant'"):
        scalegmn.build(task="equivariant", spec=SPEC, config=cfg)
    with pytest.raises(ValueError, match="contradicts config.backend"):
        scalegmn.build("scalegmn", spec=SPEC, config=cfg)
    with pytest.raises(ValueError, match="needs out_dim"):
        scalegmn.build("scalegmn", "invariant", spec=SPEC)
    with pytest.raises(ValueError, match="reads a WeightSpaceConfig"):
        scalegmn.build(spec=SPEC, config=ModelConfig(backend="monomial-nfn", out_dim=1))
    # an equivariant model needs no out_dim
    assert scalegmn.build("scalegmn", "equivariant", spec=SPEC, hidden=8, layers=1)


def test_execution_switches_are_methods_not_mutation():
    net = scalegmn.build("scalegmn", spec=SPEC, out_dim=1, hidden=8, layers=2)
    before = net.cfg
    net.set_execution(engine="sparse", checkpoint=True)
    assert net.cfg.execution.engine == "sparse" and net.cfg.execution.checkpoint
    assert before.execution.engine == "auto"          # the old config object is untouched
    with pytest.raises(ValueError, match="fused"):
        net.set_execution(fused=False)


def test_a_registered_backend_brings_its_own_config_class():
    import torch

    @dataclasses.dataclass(frozen=True)
    class WidthConfig(ModelConfig):
        width: int = 3

    @scalegmn.register("test-width", config=WidthConfig)
    def _factory(cfg, spec):
        return torch.nn.Linear(cfg.width, cfg.out_dim)

    try:
        cfg = ModelConfig.from_dict({"backend": "test-width", "width": 5, "out_dim": 2})
        assert isinstance(cfg, WidthConfig)
        assert scalegmn.build(spec=SPEC, config=cfg).in_features == 5
        with pytest.raises(ValueError, match="'model.readout' for backend 'test-width'"):
            ModelConfig.from_dict({"backend": "test-width", "readout": "last_layer"})
        with pytest.raises(TypeError, match="ModelConfig subclass"):
            scalegmn.register("test-bad", config=dict)
    finally:
        from scalegmn import registry
        registry._BACKENDS.pop("test-width"), registry._CONFIGS.pop("test-width")


def test_run_configs_set_model_task_from_the_run_and_refuse_a_contradiction():
    assert load_config("mnist_editing_scalegmn").model.task == "equivariant"
    assert load_config("mnist_inr_monomial_nfn").model.task == "invariant"
    assert load_config("mnist_inr_scalegmn").model.out_dim is None
    with pytest.raises(ValueError, match="'model.task' is 'equivariant' but task "
                                         "inr_classification"):
        load_config("mnist_inr_scalegmn", ["model.task=equivariant"])
    with pytest.raises(ValueError, match="'model.sign_inv' for backend 'np'"):
        load_config("mnist_inr_np", ["model.sign_inv=abs"])
    # a config derived from another backend's (the benchmark's swaps) keeps what it reads
    swapped = load_config("mnist_editing_scalegmn", ["model.backend=magep-nfn"],
                          drop_unread=True)
    assert type(swapped.model) is WeightSpaceConfig and swapped.model.hidden == 32
    with pytest.raises(ValueError, match="'model.sign_inv' for backend 'magep-nfn'"):
        load_config("mnist_editing_scalegmn", ["model.backend=magep-nfn"])


def test_configs_saved_before_the_split_are_upgraded():
    # (``pair_messages`` came after the split: no saved run of that era has it)
    old = {**{k: v for k, v in ScaleGMNConfig().to_dict().items() if k != "pair_messages"},
           "channels": None,
           "head_hidden": 256, "io_embed": True, "extra": {}, "backend": "np", "out_dim": 1}
    new = upgrade_legacy(old, infer_out_dim=True)
    cfg = ModelConfig.from_dict(new)
    assert type(cfg) is WeightSpaceConfig and cfg.head_hidden == 256 and cfg.out_dim is None
    assert upgrade_legacy(old, infer_out_dim=False)["out_dim"] == 1   # regression: one output
    # the old config carried other families' keys unread (the benchmark's MAGEP-NFN editing
    # runs had sign_inv: abs): dropped, the model is the same
    changed = {**old, "sign_inv": "abs"}
    assert ModelConfig.from_dict(upgrade_legacy(changed, infer_out_dim=True)) == cfg
    with pytest.raises(ValueError, match="sign_inv"):        # today's mappings: refused
        ModelConfig.from_dict({"backend": "np", "sign_inv": "abs"})
    today = ScaleGMNConfig(out_dim=1).to_dict()
    assert upgrade_legacy(today, infer_out_dim=True) == today     # no 'extra': unchanged


def test_an_old_runs_config_yaml_can_be_used_as_a_config(tmp_path):
    # a config.yaml written by a run before the split holds every family's keys and ``extra``;
    # ``scalegmn train --config old_run/config.yaml`` refused it ("unknown config key
    # 'model.residual' for backend 'np'")
    import yaml
    old_model = {**{k: v for k, v in ScaleGMNConfig().to_dict().items()
                    if k != "pair_messages"},
                 "channels": [8, 8], "head_hidden": 16, "io_embed": True, "extra": {},
                 "backend": "np", "out_dim": 1}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"task": "inr_classification", "model": old_model,
                                    "train": {"epochs": 1}}))
    cfg = load_config(str(path), ["train.lr=0.001"])
    assert type(cfg.model) is WeightSpaceConfig and cfg.model.channels == [8, 8]
    assert cfg.model.out_dim is None and cfg.train.lr == 0.001
    # an editing run's old config said model.task: invariant (build overwrote it then)
    path.write_text(yaml.safe_dump({"task": "inr_editing",
                                    "model": {**old_model, "task": "invariant"}}))
    assert load_config(str(path)).model.task == "equivariant"
    with pytest.raises(ValueError, match="model.residual"):   # today's files: still refused
        path.write_text(yaml.safe_dump({"task": "inr_classification",
                                        "model": {"backend": "np", "residual": True}}))
        load_config(str(path))
