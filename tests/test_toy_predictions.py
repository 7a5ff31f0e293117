"""The toy comparison's written predictions judged by the numbers (recipe_tapo.toy.predictions): the
verdict rules of docs/toy_experiment/COMMAND.md on made-up runs."""

import pytest

from recipe_tapo.toy.predictions import HOLDS, NOT_RUN, REFUTED, UNDECIDED, judge, predictions_section

SEEDS = ["0", "1", "2"]


def _run(pass1, dsr=50.0, err=50.0, reflecting=5.0, right_after_wrong=10.0, reflect_after_wrong=10.0,
         false_alarm=1.0, steps=None):
    probe = {"metrics": {key: {"share": value / 100} for key, value in (
        ("right_after_wrong", right_after_wrong), ("reflect_after_wrong", reflect_after_wrong),
        ("false_alarm", false_alarm))}}
    return {"test": {"pass@1": pass1, "dsr": dsr, "err": err, "reflection_rate": reflecting}, "probe": probe,
            "steps": steps or {}}


def _tapo_steps(rows=2.0, share=0.02, ots=0.5, entropy_constructed=0.3, entropy_original=0.2):
    return {1: {"tapo/constructed_rows": rows, "tapo/constructed_token_share": share,
                "tapo/ots_weight_median/first_inserted": ots, "tapo/entropy/constructed": entropy_constructed,
                "tapo/entropy/original": entropy_original},
            2: {"tapo/constructed_rows": 0.0, "tapo/constructed_token_share": 0.0,
                "tapo/ots_weight_median/first_inserted": 0.0}}  # no constructions: its OTS median is not counted


def _verdicts(runs):
    return {verdict["id"]: verdict for verdict in judge({"runs": runs}, SEEDS)}


def test_paired_predictions_hold_when_the_interval_clears_the_bound_and_are_refuted_below_it():
    runs = {}
    for seed, (grpo, tapo) in zip(SEEDS, ((90.0, 92.0), (91.0, 93.5), (89.0, 91.0))):
        runs[("grpo", seed)] = _run(grpo, dsr=60.0, reflect_after_wrong=5.0, false_alarm=0.5)
        runs[("tapo", seed)] = _run(tapo, dsr=55.0 + int(seed) * 10, reflect_after_wrong=2.0, false_alarm=4.0 + int(seed),
                                    steps=_tapo_steps())
    verdicts = _verdicts(runs)
    assert verdicts["P1"]["verdict"] == HOLDS and "+2.17 [" in verdicts["P1"]["measured"]
    assert verdicts["P2"]["verdict"] == UNDECIDED  # -5, +5, +15: the interval straddles 0
    assert verdicts["E2"]["verdict"] == REFUTED  # -3 in every seed
    assert verdicts["E3"]["verdict"] == REFUTED  # +3.5, +4.5, +5.5: more than 2 points above GRPO's
    assert verdicts["E5"]["verdict"] == HOLDS and verdicts["E8"]["verdict"] == UNDECIDED  # [+1.5, +2.8]: not inside +-2
    assert verdicts["E1"]["verdict"] == HOLDS and "0.500, 0.500, 0.500" in verdicts["E1"]["measured"]
    assert verdicts["E7"]["verdict"] == HOLDS and "1.00% (3 runs)" in verdicts["E7"]["measured"]
    for missing in ("P5", "P6", "E4", "E9"):  # no opsd, oracle or ablation run
        assert verdicts[missing]["verdict"] == NOT_RUN


def test_one_paired_seed_decides_nothing_and_no_run_is_not_run():
    verdicts = _verdicts({("grpo", "0"): _run(90.0), ("tapo", "0"): _run(99.0)})
    assert verdicts["P1"]["verdict"] == UNDECIDED and "(1 seed: no interval)" in verdicts["P1"]["measured"]
    assert _verdicts({})["P1"]["verdict"] == NOT_RUN


@pytest.mark.parametrize("opsd, verdict", [((91.0, 92.0, 91.5), HOLDS), ((95.0, 96.0, 95.5), REFUTED),
                                           ((89.0, 90.0, 91.0), UNDECIDED)])
def test_p5_needs_opsd_above_grpo_and_below_tapo(opsd, verdict):
    runs = {}
    for seed, value in zip(SEEDS, opsd):
        runs[("grpo", seed)], runs[("tapo", seed)], runs[("opsd", seed)] = _run(90.0), _run(93.0), _run(value)
    assert _verdicts(runs)["P5"]["verdict"] == verdict


def test_e4_judges_the_ablation_on_seed_0_against_grpos_seed_spread():
    runs = {("grpo", seed): _run(90.0 + int(seed)) for seed in SEEDS}  # sd 1.0
    runs[("tapo", "0")] = _run(92.0, steps=_tapo_steps())
    runs[("tapo_no_ots", "0")] = _run(91.5, steps=_tapo_steps(entropy_constructed=0.5))
    assert _verdicts(runs)["E4"]["verdict"] == HOLDS
    runs[("tapo_no_ots", "0")] = _run(93.5, steps=_tapo_steps())
    assert _verdicts(runs)["E4"]["verdict"] == REFUTED  # 1.5 points above TAPO: more than GRPO's sd
    runs[("tapo_no_ots", "0")] = _run(92.5, steps=_tapo_steps(entropy_constructed=0.1))
    assert _verdicts(runs)["E4"]["verdict"] == UNDECIDED


def test_e9_holds_only_when_the_oracle_constructs_more_in_every_seed_and_the_table_renders():
    runs = {}
    for seed, oracle_rows in zip(SEEDS, (20.0, 25.0, 1.0)):
        runs[("grpo", seed)] = _run(90.0)
        runs[("tapo", seed)] = _run(91.0, steps=_tapo_steps(rows=2.0))
        runs[("tapo_teacher", seed)] = _run(95.0, steps=_tapo_steps(rows=oracle_rows))
    verdicts = _verdicts(runs)
    assert verdicts["E9"]["verdict"] == REFUTED and "0.5 vs 1.0" in verdicts["E9"]["measured"]  # a mean over steps, the empty one too
    assert verdicts["P6"]["verdict"] == HOLDS
    table = "\n".join(predictions_section({"runs": runs}, SEEDS))
    assert "| P6 | test Pass@1, tapo_teacher - tapo: +4.00" in table and "| E9 |" in table
