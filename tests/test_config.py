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
        ({"synthesis": {"prefix_end": "at_error"}}, "tapo.synthesis.prefix_end must be one of"),
        ({"synthesis": {"temperature": -0.1}}, "tapo.synthesis.temperature must be >= 0"),
        ({"synthesis": {"top_p": 0.0}}, r"tapo.synthesis.top_p must be in \(0, 1\]"),
        ({"synthesis": {"top_p": 1.5}}, r"tapo.synthesis.top_p must be in \(0, 1\]"),
        ({"synthesis": {"max_new_tokens": 0}}, "tapo.synthesis.max_new_tokens must be >= 1"),
        ({"synthesis": {"timeout_s": 0}}, "tapo.synthesis.timeout_s must be > 0"),
        ({"advantage": {"decoupled": "no"}}, "tapo.advantage.decoupled must be bool"),
        ({"splicing": {"full_reconstruction": 1}}, "tapo.splicing.full_reconstruction must be bool"),
        ({"dump": {"every": -1}}, "tapo.dump.every must be >= 0"),
        ({"dump": {"dir": ""}}, "tapo.dump.dir must be null or a folder name"),
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


def test_new_keys_have_their_documented_defaults():
    config = TapoConfig()
    assert config.synthesis.prefix_end == "after_error"
    assert config.synthesis.template_path is None
    assert (config.synthesis.temperature, config.synthesis.top_p) == (1.0, 1.0)
    assert (config.synthesis.max_new_tokens, config.synthesis.timeout_s) == (4096, 600.0)
    assert config.advantage.decoupled is True
    assert config.advantage.loss_normalization == "separate"
    assert (config.synthesis.stream, config.synthesis.max_failed_rounds) == (True, 3)
    assert config.splicing.full_reconstruction is False
    assert (config.dump.every, config.dump.dir) == (0, None)


@pytest.mark.parametrize("scope", ["query", "batch"])
def test_one_pair_per_step_with_zeroed_degenerate_groups_is_refused(scope):
    values = {
        "selection": {"max_pairs_per_step": 1},
        "synthesis": {"stream": False},
        "advantage": {"degenerate": "zero", "ref_group_scope": scope},
    }
    with pytest.raises(ValueError, match="tapo.selection.max_pairs_per_step=1 with tapo.advantage.degenerate=zero"):
        TapoConfig.from_dict(values)


def test_one_construction_per_question_with_zeroed_per_question_groups_is_refused():
    values = {"selection": {"m_max": 1}, "advantage": {"degenerate": "zero", "ref_group_scope": "query"}}
    with pytest.raises(
        ValueError,
        match="tapo.selection.m_max=1 with tapo.advantage.degenerate=zero and tapo.advantage.ref_group_scope=query",
    ):
        TapoConfig.from_dict(values)


@pytest.mark.parametrize(
    "values",
    [
        # A batch-wide G_ref can hold several questions' single constructions.
        {"selection": {"m_max": 1}, "advantage": {"degenerate": "zero", "ref_group_scope": "batch"}},
        # orig_baseline gives a baseline
        {"selection": {"m_max": 1, "max_pairs_per_step": 1}, "synthesis": {"stream": False}},
        {"selection": {"max_pairs_per_step": 2}, "synthesis": {"stream": False}, "advantage": {"degenerate": "zero"}},
        # Without DAE there is no G_ref: constructed rows are normalised with their source group.
        {
            "selection": {"max_pairs_per_step": 1},
            "synthesis": {"stream": False},
            "advantage": {"degenerate": "zero", "decoupled": False},
        },
        {"scoring": {"keep": "correct_only"}, "advantage": {"degenerate": "zero", "decoupled": False}},
    ],
)
def test_settings_that_can_give_a_constructed_advantage_are_allowed(values):
    TapoConfig.from_dict(values)


def test_full_reconstruction_is_refused_with_anchor_mode():
    with pytest.raises(ValueError, match="tapo.splicing.full_reconstruction=true needs tapo.synthesis.mode=verbatim"):
        TapoConfig.from_dict({"splicing": {"full_reconstruction": True}, "synthesis": {"mode": "anchor"}})
    assert TapoConfig.from_dict({"splicing": {"full_reconstruction": True}}).splicing.full_reconstruction


def test_a_template_file_of_ones_own_is_checked_at_start_up(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ValueError, match=f"tapo.synthesis.template_path: no such file '{missing}'"):
        TapoConfig.from_dict({"synthesis": {"template_path": str(missing)}})
    lacking = tmp_path / "short.txt"
    lacking.write_text("Fix this: {{wrong_answer}}\nUsing: {{right_answer}}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tapo.synthesis.template_path: template .*short.txt.* lacks .*question"):
        TapoConfig.from_dict({"synthesis": {"template_path": str(lacking)}})
    good = tmp_path / "good.txt"
    good.write_text("Q: {{question}}\nWrong: {{wrong_answer}}\nRight: {{right_answer}}", encoding="utf-8")
    assert TapoConfig.from_dict({"synthesis": {"template_path": str(good)}}).synthesis.template_path == str(good)


def test_a_cap_over_the_batch_is_refused_when_synthesis_streams_per_group():
    with pytest.raises(ValueError, match="tapo.selection.max_pairs_per_step needs tapo.synthesis.stream=false"):
        TapoConfig.from_dict({"selection": {"max_pairs_per_step": 8}})
    assert TapoConfig.from_dict({"selection": {"max_pairs_per_step": 8}, "synthesis": {"stream": False}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"advantage": {"loss_normalization": "per_row"}}, "tapo.advantage.loss_normalization must be one of"),
        ({"synthesis": {"max_failed_rounds": 0}}, "tapo.synthesis.max_failed_rounds must be >= 1"),
    ],
)
def test_new_keys_refuse_bad_values(values, message):
    with pytest.raises(ValueError, match=message):
        TapoConfig.from_dict(values)
