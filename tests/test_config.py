"""TapoConfig: defaults, the yaml section, validation and unknown-key refusal."""

import importlib.resources

import pytest
import yaml
from omegaconf import OmegaConf

from recipe_tapo.config import TapoConfig


def _defaults_yaml_text() -> str:
    return importlib.resources.files("recipe_tapo.conf").joinpath("tapo_defaults.yaml").read_text("utf-8")


def test_defaults_are_the_paper_values():
    config = TapoConfig()
    assert (config.selection.n_pos, config.selection.n_neg, config.selection.m_max) == (2, 4, 4)
    assert config.advantage.ref_loss_weight == 1.0
    assert config.advantage.epsilon == 1e-6
    assert (config.ots.w_min, config.ots.w_max) == (0.01, 10.0)
    assert config.advantage.ref_group_scope == "query"
    assert config.advantage.degenerate == "orig_baseline"
    assert config.synthesis.mode == "verbatim"


def test_yaml_section_has_every_key_with_the_dataclass_default():
    section = yaml.safe_load(_defaults_yaml_text())
    assert list(section) == ["tapo"]
    assert section["tapo"] == TapoConfig().to_dict()


def test_every_yaml_key_is_commented():
    lines = [line.strip() for line in _defaults_yaml_text().splitlines() if line.strip()]
    for previous, line in zip(lines, lines[1:]):
        if not line.startswith("#"):
            assert previous.startswith("#"), f"key without a comment above it: {line!r}"


def test_from_omegaconf_reads_the_yaml_node():
    node = OmegaConf.create(_defaults_yaml_text()).tapo
    assert TapoConfig.from_omegaconf(node) == TapoConfig()
    assert TapoConfig.from_omegaconf(None) == TapoConfig()


def test_partial_dict_overrides_and_keeps_other_defaults():
    config = TapoConfig.from_dict(
        {"selection": {"m_max": 2}, "ots": {"enable": False}, "synthesis": {"mode": "anchor"}}
    )
    assert config.selection.m_max == 2
    assert config.selection.n_neg == 4
    assert config.ots.enable is False
    assert config.synthesis.mode == "anchor"


def test_ints_are_accepted_for_floats():
    assert TapoConfig.from_dict({"ots": {"w_max": 5}}).ots.w_max == 5.0


@pytest.mark.parametrize(
    "values, key",
    [
        ({"selektion": {}}, "tapo.selektion"),
        ({"selection": {"m_mx": 3}}, "tapo.selection.m_mx"),
        ({"ots": {"enable": True, "wmax": 3}}, "tapo.ots.wmax"),
    ],
)
def test_unknown_keys_are_refused_by_name(values, key):
    with pytest.raises(ValueError, match=f"unknown key {key}"):
        TapoConfig.from_dict(values)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"selection": {"n_pos": 0}}, "n_pos must be >= 1"),
        ({"selection": {"n_neg": 0}}, "n_neg must be >= 1"),
        ({"selection": {"m_max": 0}}, "m_max must be >= 1"),
        ({"selection": {"max_pairs_per_step": 0}}, "max_pairs_per_step"),
        ({"ots": {"w_min": 2.0, "w_max": 1.0}}, r"w_min \(2.0\) must be <= tapo.ots.w_max \(1.0\)"),
        ({"ots": {"w_min": 0.0}}, "w_min must be > 0"),
        ({"synthesis": {"mode": "paraphrase"}}, "synthesis.mode must be one of"),
        ({"scoring": {"keep": "best"}}, "scoring.keep must be one of"),
        ({"advantage": {"ref_group_scope": "global"}}, "ref_group_scope must be one of"),
        ({"advantage": {"degenerate": "skip"}}, "degenerate must be one of"),
        ({"advantage": {"ref_loss_weight": 0.0}}, "no constructed row can ever"),
        ({"splicing": {"min_prefix_fraction": 1.0}}, "min_prefix_fraction must be in"),
        ({"splicing": {"max_response_length": 1}}, "max_response_length must be null or >= 2"),
        ({"selection": {"n_pos": True}}, "must be int"),
        ({"selection": {"n_pos": 2.5}}, "must be int"),
        ({"ots": {"enable": 1}}, "must be bool"),
        ({"synthesis": {"mode": None}}, "must not be null"),
        ({"selection": [1, 2]}, "tapo.selection must be a mapping"),
    ],
)
def test_invalid_values_are_refused_with_a_clear_error(values, message):
    with pytest.raises(ValueError, match=message):
        TapoConfig.from_dict(values)


@pytest.mark.parametrize("scope", ["query", "batch"])
def test_a_setting_that_can_never_give_a_constructed_advantage_is_refused(scope):
    values = {"scoring": {"keep": "correct_only"}, "advantage": {"degenerate": "zero", "ref_group_scope": scope}}
    with pytest.raises(ValueError, match="can never give a constructed row a non-zero advantage"):
        TapoConfig.from_dict(values)


def test_correct_only_with_the_orig_baseline_fallback_is_allowed():
    config = TapoConfig.from_dict({"scoring": {"keep": "correct_only"}})
    assert config.advantage.degenerate == "orig_baseline"
