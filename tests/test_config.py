import pytest

from privsplit.config import Config, apply_overrides, load_config
from privsplit.errors import ConfigError


def test_yaml_round_trip(tmp_path):
    cfg = apply_overrides(Config(), ["train.epochs=3", "reduction=[{op: shuffle}, {op: noise, sigma: 8}]",
                                     "adversaries=[{name: dec, kind: decoder}]"])
    path = tmp_path / "c.yaml"
    cfg.save(path)
    again = load_config(path)
    assert again == cfg
    assert again.adversaries[0].kind == "decoder" and again.adversaries[0].target == "private"


def test_overrides_coerce_and_index():
    cfg = apply_overrides(Config(), ["train.lam=0", "reduction.0.sigma=8", "data.root=/x", "data.limit_train=null"])
    assert cfg.train.lam == 0.0 and isinstance(cfg.train.lam, float)
    assert cfg.reduction[0]["sigma"] == 8
    assert cfg.data.root == "/x" and cfg.data.limit_train is None


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epoch=3", "unknown key.*epoch in train; valid keys: adversary_steps, batch_size"),
        ("train.epochs=three", "train.epochs must be a whole number"),
        ("train.flip=1", "train.flip must be true or false"),
        ("nothing", "must look like key=value"),
        ("heads.2.name=x", "not an index"),
        ("data=3", "data must be a mapping"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(Config(), [override])


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(bad)


def test_example_configs_load():
    from pathlib import Path

    configs = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
    assert configs, "configs/ should hold the paper's settings"
    for path in configs:
        cfg = load_config(path)
        assert cfg.data.name in {"cifar10", "celeba", "fairface", "utkface", "digits"}
