"""The toy comparison's written predictions (docs/toy_experiment/COMMAND.md: the paper's P1-P6, the
project's E1-E9), each judged by the numbers of a report's data (`report.collect`).

The rules are COMMAND.md's, written before the runs: a prediction on a paired difference *holds*
when the 95% Student-t interval of its mean over seeds lies above the bound, is *refuted* when it
lies below, and is *undecided* otherwise (also with fewer than two paired seeds, when a t-interval
does not exist). Where COMMAND.md's rule for one prediction reads otherwise (E3's 2-point margin, E4
on seed 0 alone, E7's mean, E9's every seed) the verdict follows it, and the table says the reading.
"""

from __future__ import annotations

from collections.abc import Callable

from recipe_tapo.toy.report import BASELINE_ARM, mean_std, paired_differences, run_mechanism, t_interval

HOLDS, REFUTED, UNDECIDED, NOT_RUN = "holds", "refuted", "undecided", "not run"
TAPO, OPSD, ORACLE, NO_OTS = "tapo", "opsd", "tapo_teacher", "tapo_no_ots"
# COMMAND.md's thresholds
OTS_FLOOR, OTS_ABOVE_FLOOR = 0.01, 0.05
FALSE_ALARM_MARGIN = 2.0
E5_BOUND = -1.0
E7_TOKEN_SHARE = 0.05
E8_BAND = 2.0


def _metric(data: dict, arm: str, seeds: list[str], pick: Callable[[dict], float | None]) -> dict[str, float | None]:
    """{seed: pick(run)} for the seeds the arm ran (a run without the figure gives None)."""
    values = {}
    for seed in seeds:
        run = data["runs"].get((arm, seed))
        values[seed] = pick(run) if run else None
    return values


def _test(key: str) -> Callable[[dict], float | None]:
    return lambda run: (run.get("test") or {}).get(key)


def _probe(key: str) -> Callable[[dict], float | None]:
    def pick(run: dict) -> float | None:
        share = ((run.get("probe") or {}).get("metrics") or {}).get(key)
        return None if share is None else 100.0 * share["share"]
    return pick


def _mechanism(key: str) -> Callable[[dict], float | None]:
    return lambda run: run_mechanism(run["steps"]).get(key) if run.get("steps") else None


def _interval_text(differences: list[float]) -> str:
    mean, half = t_interval(differences)
    if mean is None:
        return "no paired seed"
    if half is None:
        return f"{mean:+.2f} (1 seed: no interval)"
    return f"{mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] over {len(differences)} seeds"


def _versus(differences: list[float], bound: float = 0.0) -> str:
    """holds / refuted / undecided for "the interval of the mean paired difference lies above `bound`"."""
    mean, half = t_interval(differences)
    if mean is None:
        return NOT_RUN
    if half is None:
        return UNDECIDED
    if mean - half > bound:
        return HOLDS
    if mean + half < bound:
        return REFUTED
    return UNDECIDED


def _paired(data: dict, arm: str, baseline: str, seeds: list[str], pick) -> list[float]:
    return paired_differences(_metric(data, arm, seeds, pick), _metric(data, baseline, seeds, pick))


def judge(data: dict, seeds: list[str]) -> list[dict]:
    """One verdict per written prediction: {id, measured, verdict, reading} (`reading`: how COMMAND.md's
    rule was applied where it is not the default one)."""
    verdicts = []

    def add(ident: str, measured: str, verdict: str, reading: str = "") -> None:
        verdicts.append({"id": ident, "measured": measured, "verdict": verdict, "reading": reading})

    def versus_grpo(ident: str, pick, what: str, arm: str = TAPO, baseline: str = BASELINE_ARM) -> list[float]:
        differences = _paired(data, arm, baseline, seeds, pick)
        add(ident, f"{what}, {arm} - {baseline}: {_interval_text(differences)}", _versus(differences))
        return differences

    pass1 = versus_grpo("P1", _test("pass@1"), "test Pass@1")
    versus_grpo("P2", _test("dsr"), "DSR")
    versus_grpo("P3", _test("err"), "ERR")
    versus_grpo("P4", _probe("right_after_wrong"), "probe, ends right after its own wrong line")

    above_grpo = _paired(data, OPSD, BASELINE_ARM, seeds, _test("pass@1"))
    below_tapo = _paired(data, TAPO, OPSD, seeds, _test("pass@1"))
    if not above_grpo or not below_tapo:
        p5 = NOT_RUN
    elif _versus(above_grpo) == HOLDS and _versus(below_tapo) == HOLDS:
        p5 = HOLDS
    elif _versus(above_grpo) == REFUTED or _versus(below_tapo) == REFUTED:
        p5 = REFUTED
    else:
        p5 = UNDECIDED
    add("P5", f"test Pass@1, opsd - grpo: {_interval_text(above_grpo)}; tapo - opsd: {_interval_text(below_tapo)}", p5)
    versus_grpo("P6", _test("pass@1"), "test Pass@1", arm=ORACLE, baseline=TAPO)

    medians = [value for value in _metric(data, TAPO, seeds, _mechanism("tapo/ots_weight_median/first_inserted")).values()
               if value is not None]
    if not medians:
        e1 = NOT_RUN
    else:
        e1 = HOLDS if min(medians) > OTS_ABOVE_FLOOR else (REFUTED if max(medians) <= OTS_FLOOR * 1.1 else UNDECIDED)
    add("E1", "OTS weight of the first inserted token, the run's mean of step medians: "
        + ", ".join(f"{value:.3f}" for value in medians), e1,
        f"holds: every TAPO run above {OTS_ABOVE_FLOOR}; refuted: every run at the {OTS_FLOOR} floor")
    versus_grpo("E2", _probe("reflect_after_wrong"), "probe, reflects after its own wrong line")

    alarms = _paired(data, TAPO, BASELINE_ARM, seeds, _probe("false_alarm"))
    mean, half = t_interval(alarms)
    if mean is None:
        e3 = NOT_RUN
    elif half is None:
        e3 = UNDECIDED
    else:
        e3 = HOLDS if mean + half <= FALSE_ALARM_MARGIN else (REFUTED if mean - half > FALSE_ALARM_MARGIN else UNDECIDED)
    add("E3", f"probe false alarms, tapo - grpo: {_interval_text(alarms)}", e3,
        f"holds: the interval's top at most {FALSE_ALARM_MARGIN:g} points; refuted: its bottom above")

    e4_seed = seeds[0]
    no_ots = data["runs"].get((NO_OTS, e4_seed)) or {}
    tapo_run = data["runs"].get((TAPO, e4_seed)) or {}
    if no_ots.get("test") and tapo_run.get("test"):
        mechanism = run_mechanism(no_ots["steps"])
        constructed, original = mechanism.get("tapo/entropy/constructed"), mechanism.get("tapo/entropy/original")
        gap = None if constructed is None or original is None else constructed - original
        difference = no_ots["test"]["pass@1"] - tapo_run["test"]["pass@1"]
        _, grpo_spread = mean_std(list(_metric(data, BASELINE_ARM, seeds, _test("pass@1")).values()))
        if grpo_spread is not None and difference > grpo_spread:
            e4 = REFUTED
        elif gap is not None and gap > 0 and difference <= 0:
            e4 = HOLDS
        else:
            e4 = UNDECIDED
        gap_text = "n/a" if gap is None else f"{gap:+.3f}"
        spread_text = "n/a" if grpo_spread is None else f"{grpo_spread:.2f}"
        add("E4", f"seed {e4_seed}: tapo_no_ots entropy constructed - rollouts {gap_text}; Pass@1 tapo_no_ots - tapo "
            f"{difference:+.2f} (GRPO's seed sd {spread_text})", e4,
            "holds: entropy gap above 0 and Pass@1 difference at most 0; refuted: Pass@1 difference above GRPO's sd")
    else:
        add("E4", f"tapo_no_ots or tapo seed {e4_seed} not evaluated", NOT_RUN)

    mean, half = t_interval(pass1)
    e5 = _versus(pass1, E5_BOUND)
    add("E5", f"test Pass@1, tapo - grpo: {_interval_text(pass1)}", e5, f"against {E5_BOUND:g} point")
    versus_grpo("E6", _test("reflection_rate"), "share of test answers that reflect")

    shares = [value for value in _metric(data, TAPO, seeds, _mechanism("tapo/constructed_token_share")).values()
              if value is not None]
    share = sum(shares) / len(shares) if shares else None
    e7 = NOT_RUN if share is None else (HOLDS if share < E7_TOKEN_SHARE else REFUTED)
    add("E7", "constructed rows' share of response tokens, mean over the TAPO runs: "
        + ("n/a" if share is None else f"{100 * share:.2f}% ({len(shares)} runs)"), e7, "the mean, as written")

    if mean is None:
        e8 = NOT_RUN
    elif half is None:
        e8 = UNDECIDED
    elif -E8_BAND <= mean - half and mean + half <= E8_BAND:
        e8 = HOLDS
    elif mean - half > E8_BAND or mean + half < -E8_BAND:
        e8 = REFUTED
    else:
        e8 = UNDECIDED
    add("E8", f"test Pass@1, tapo - grpo: {_interval_text(pass1)}", e8, f"the interval inside [-{E8_BAND:g}, +{E8_BAND:g}]")

    rows = _mechanism("tapo/constructed_rows")
    pairs = [(oracle, tapo) for oracle, tapo in zip(_metric(data, ORACLE, seeds, rows).values(),
                                                     _metric(data, TAPO, seeds, rows).values())
             if oracle is not None and tapo is not None]
    e9 = NOT_RUN if not pairs else (HOLDS if all(oracle > tapo for oracle, tapo in pairs) else REFUTED)
    add("E9", "constructed rows a step, tapo_teacher vs tapo per seed: "
        + ", ".join(f"{oracle:.1f} vs {tapo:.1f}" for oracle, tapo in pairs), e9, "every seed, as written")
    return verdicts


def predictions_section(data: dict, seeds: list[str]) -> list[str]:
    """The report's predictions table."""
    lines = ["", "## The written predictions, judged (docs/toy_experiment/COMMAND.md)", "",
             "P1-P6 are the paper's, E1-E9 this project's, all written before the comparison ran. Holds: the 95% "
             "t-interval of the mean paired difference over seeds lies above the bound; refuted: below; undecided: "
             "it straddles (or fewer than two seeds). Rules that read otherwise are stated in the last column.", "",
             "| # | measured | verdict | rule applied |", "|---|---|---|---|"]
    for verdict in judge(data, seeds):
        lines.append(f"| {verdict['id']} | {verdict['measured']} | **{verdict['verdict']}** | {verdict['reading']} |")
    return lines
