"""Splicing: departure point, token-exact kept prefix, rejections; property tests on byte-level BPE."""

import collections
import dataclasses

import pytest
from hypothesis import HealthCheck, assume, event, given, settings, target
from hypothesis import strategies as st

from recipe_tapo.config import SplicingConfig
from recipe_tapo.splicing import (AnchorMatch, SpliceFailure, departs_inside_line, find_departure, locate_anchor,
                                  splice_trajectory)
from recipe_tapo.synthesis import ParsedSynthesis

WRONG = "First, 7 * 8 = 54.\nThen 54 + 1 = 55.\nSo the answer is \\boxed{55}."
RECON = "First, 7 * 8 = 54.\nWait, 7 * 8 is 56, not 54. Then 56 + 1 = 57.\nSo the answer is \\boxed{57}."
LENIENT = SplicingConfig(min_prefix_tokens=1)


def _verbatim(reconstruction: str) -> ParsedSynthesis:
    return ParsedSynthesis(mode="verbatim", reconstruction=reconstruction)


def _anchor(anchor: str, reconstruction: str) -> ParsedSynthesis:
    return ParsedSynthesis(mode="anchor", anchor=anchor, reconstruction=reconstruction)


def _normalised(text: str) -> str:
    return " ".join(text.split())


# --- departure ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrong, recon, expected",
    [
        ("a b c", "a b d", (4, 4)),
        ("so 54 + 1", "so 56 + 1", (4, 4)),  # inside the word "54": after the shared "5"
        ("x  =\n5 then", "x = 5 so", (7, 6)),  # whitespace runs count as equal
        ("x =5", "x=6", (1, 1)),  # a space that is absent is a difference
        ("a  b", "a b c", (4, 3)),  # y- ends, the reconstruction goes on
        ("ab", "abcd", (2, 2)),
        ("abcd", "ab cd", (2, 2)),
        ("a b c", "a b", (3, 3)),  # never departs
        ("the answer", "the ans", (7, 7)),  # truncated reconstruction: never departs
        ("", "new", (0, 0)),
    ],
)
def test_departure_points(wrong, recon, expected):
    assert find_departure(wrong, recon) == expected


# --- anchor location ----------------------------------------------------------------------------
def test_anchor_is_found_whitespace_tolerantly():
    start = WRONG.index("Then")
    assert locate_anchor(WRONG, "Then 54\n+  1") == AnchorMatch(start, start + len("Then 54 + 1"))
    assert locate_anchor(WRONG, "Then 56").failure == SpliceFailure.ANCHOR_NOT_FOUND
    assert locate_anchor(WRONG, "  ").failure == SpliceFailure.ANCHOR_NOT_FOUND


@pytest.mark.parametrize(
    "wrong, quote",
    [
        ("First, 7 * 48 = 336.\nSo \\boxed{336}.", "8 = 336"),  # starts inside "48"
        ("First, 7 * 48 = 3360.\nSo \\boxed{3360}.", "7 * 48 = 336"),  # ends inside "3360"
        ("Then x_1 = 5.", "1 = 5"),  # "_" is a word character
        ("so the answer is thirty", "he answer"),
    ],
)
def test_a_quote_must_begin_and_end_at_word_boundaries(wrong, quote):
    assert locate_anchor(wrong, quote).failure == SpliceFailure.ANCHOR_NOT_FOUND


def test_a_quote_may_begin_or_end_with_punctuation_next_to_a_word():
    wrong = "First, 7 * 48 = 336.\nSo \\boxed{336}."
    assert locate_anchor(wrong, "= 336.") == AnchorMatch(wrong.index("= 336."), wrong.index("= 336.") + 6)
    assert locate_anchor(wrong, "{336}").ok


@pytest.mark.parametrize(
    "wrong, quote",
    [
        ("x 1\nx 1", "x 1"),
        ("So 54 + 1 = 55. Again, 54  +\n1 = 55.", "54 + 1 = 55."),  # equal after whitespace normalisation
        ("a. a. a.", "a. a."),  # overlapping copies
    ],
)
def test_a_quote_found_twice_is_ambiguous_not_the_first_copy(wrong, quote):
    assert locate_anchor(wrong, quote).failure == SpliceFailure.ANCHOR_AMBIGUOUS


def test_a_mid_word_quote_no_longer_splices_into_a_word(tapo_tokenizer):
    # Before word boundaries this gave "First, 7 * 4Wait, ...".
    wrong = "First, 7 * 48 = 336.\nThen 336 + 1 = 337.\nSo \\boxed{337}."
    ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    for prefix_end in ("after_error", "before_error"):
        parsed = _anchor("8 = 336", "Wait, 7 * 48 is 336, fine. \\boxed{337}")
        result = splice_trajectory(wrong, ids, parsed, tapo_tokenizer, LENIENT, prefix_end=prefix_end)
        assert result.failure == SpliceFailure.ANCHOR_NOT_FOUND


# --- splice -------------------------------------------------------------------------------------
def test_hand_worked_verbatim_splice(tapo_tokenizer):
    wrong_ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(WRONG, wrong_ids, _verbatim(RECON), tapo_tokenizer, LENIENT)
    assert result.ok
    # The two texts agree up to the "\n" after "= 54."; they depart at "Wait" vs "Then" (char 19).
    assert result.text == RECON
    assert result.cut_chars <= 19 and WRONG[: result.cut_chars] == tapo_tokenizer.decode(wrong_ids[: result.cut_tokens])
    assert result.token_ids[: result.cut_tokens] == tuple(wrong_ids[: result.cut_tokens])
    assert result.token_ids[-1] == tapo_tokenizer.eos_token_id
    assert tapo_tokenizer.decode(list(result.token_ids)) == RECON + "<|im_end|>"
    assert result.prefix_fraction == pytest.approx(result.cut_tokens / len(wrong_ids))
    assert result.appended_text == RECON[result.cut_chars :]


def test_the_kept_prefix_is_the_rollouts_own_ids_even_when_not_canonical(tapo_tokenizer):
    # A sampled response need not be tokenised as encode() would: here one id per character.
    own_ids = [token for char in WRONG for token in tapo_tokenizer.encode(char, add_special_tokens=False)]
    assert own_ids != tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(WRONG, own_ids, _verbatim(RECON), tapo_tokenizer, LENIENT)
    assert result.ok
    assert result.cut_chars == 19 and result.cut_tokens == 19  # one char per id: the exact departure
    assert result.token_ids[:19] == tuple(own_ids[:19])


def test_line_boundary_moves_the_cut_to_the_start_of_the_departing_line(tapo_tokenizer):
    wrong = "Step 1: 7 * 8 = 56.\nStep 2: 56 + 9 = 64.\nSo \\boxed{64}."
    recon = "Step 1: 7 * 8 = 56.\nStep 2: 56 + 9 = 65.\nSo \\boxed{65}."
    ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    by_token = splice_trajectory(wrong, ids, _verbatim(recon), tapo_tokenizer, LENIENT)
    by_line = splice_trajectory(
        wrong, ids, _verbatim(recon), tapo_tokenizer, dataclasses.replace(LENIENT, cut_at_line_boundary=True)
    )
    assert by_token.text == by_line.text == recon
    assert by_line.cut_chars <= wrong.index("Step 2") < by_token.cut_chars
    assert by_line.appended_text.lstrip("\n").startswith("Step 2: 56 + 9 = 65.")


def test_verbatim_trajectory_holds_the_error_then_the_reflection(tapo_tokenizer):
    # The after_error reading: RECON copies the erroneous step "7 * 8 = 54." and reflects on it.
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(WRONG, ids, _verbatim(RECON), tapo_tokenizer, LENIENT)
    assert result.ok
    kept = tapo_tokenizer.decode(list(result.token_ids[: result.cut_tokens]))
    assert "7 * 8 = 54." in kept  # the mistake is y-'s own ids ...
    assert result.appended_text.lstrip().startswith("Wait, 7 * 8 is 56, not 54.")  # ... then the reflection
    assert result.text.index("= 54.") < result.text.index("Wait") < result.text.index("\\boxed{57}")


def test_anchor_mode_after_error_keeps_the_quoted_step_then_reflects(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    parsed = _anchor("First, 7 * 8 = 54.", "Wait, 7 * 8 is 56, not 54. Then 56 + 1 = 57, so \\boxed{57}.")
    result = splice_trajectory(WRONG, ids, parsed, tapo_tokenizer, LENIENT)  # prefix_end defaults to after_error
    assert result.ok
    assert result.text == "First, 7 * 8 = 54.\nWait, 7 * 8 is 56, not 54. Then 56 + 1 = 57, so \\boxed{57}."
    # y-'s text up to the end of the quote and its line break, then the model's reflection.
    assert result.text[: -len(parsed.reconstruction)] == WRONG[: WRONG.index("\n") + 1]
    assert tapo_tokenizer.decode(list(result.token_ids[: result.cut_tokens])) == WRONG[: result.cut_chars]
    assert result.text.index("= 54.") < result.text.index("Wait")


def test_anchor_mode_after_error_quote_at_the_very_end_or_before_punctuation(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    # The quote is y-'s last step: the reflection follows after a space.
    last = _anchor("So the answer is \\boxed{55}.", "Wait, 7 * 8 is 56, so \\boxed{57}.")
    result = splice_trajectory(WRONG, ids, last, tapo_tokenizer, LENIENT)
    assert result.ok and result.text == WRONG + " Wait, 7 * 8 is 56, so \\boxed{57}."
    # The quote ends before y-'s full stop, with no whitespace after it: a space joins.
    mid = _anchor("7 * 8 = 54", "Wait, 7 * 8 is 56, so \\boxed{57}.")
    result = splice_trajectory(WRONG, ids, mid, tapo_tokenizer, LENIENT)
    assert result.ok and result.text == "First, 7 * 8 = 54 Wait, 7 * 8 is 56, so \\boxed{57}."


def test_anchor_mode_before_error_cuts_where_the_quote_begins(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    parsed = _anchor("Then 54 + 1 = 55.", "Wait, 7 * 8 is 56. Then 56 + 1 = 57, so \\boxed{57}.")
    result = splice_trajectory(WRONG, ids, parsed, tapo_tokenizer, LENIENT, prefix_end="before_error")
    assert result.ok
    assert result.text == "First, 7 * 8 = 54.\nWait, 7 * 8 is 56. Then 56 + 1 = 57, so \\boxed{57}."
    assert result.cut_chars <= WRONG.index("Then")


def test_anchor_mode_keeps_more_when_the_correction_repeats_the_quote(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    parsed = _anchor("Then 54", "Then 54 + 1 = 55. Wait, 54 is wrong: \\boxed{57}.")
    result = splice_trajectory(WRONG, ids, parsed, tapo_tokenizer, LENIENT, prefix_end="before_error")
    assert result.ok
    # Departure at "Wait" vs "So": y-'s own line break stands in for the reconstruction's space.
    assert result.text == "First, 7 * 8 = 54.\nThen 54 + 1 = 55.\nWait, 54 is wrong: \\boxed{57}."
    assert result.cut_chars > WRONG.index("Then")


def test_prefix_end_is_checked(tapo_tokenizer):
    with pytest.raises(ValueError, match="prefix_end must be one of"):
        splice_trajectory(WRONG, [], _verbatim(RECON), tapo_tokenizer, LENIENT, prefix_end="at_error")


@pytest.mark.parametrize(
    "parsed, config, failure, prefix_end",
    [
        (_verbatim("First, 7 * 8 = 54.\nThen 54"), LENIENT, SpliceFailure.NO_DEPARTURE, "after_error"),
        (_verbatim(WRONG), LENIENT, SpliceFailure.NO_DEPARTURE, "after_error"),
        (
            _verbatim("First, 7 * 8 = 54.\nWait, 7 * 8 is 56, so the sum is 57"),
            LENIENT,
            SpliceFailure.NO_FINAL_ANSWER,
            "after_error",
        ),
        (_verbatim(RECON), SplicingConfig(min_prefix_tokens=1000), SpliceFailure.PREFIX_TOO_SHORT, "after_error"),
        (
            _verbatim(RECON),
            SplicingConfig(min_prefix_tokens=0, min_prefix_fraction=0.9),
            SpliceFailure.PREFIX_TOO_SHORT,
            "after_error",
        ),
        (_verbatim("Let me start over: \\boxed{57}"), SplicingConfig(), SpliceFailure.PREFIX_TOO_SHORT, "after_error"),
        (
            _verbatim(RECON),
            SplicingConfig(min_prefix_tokens=1, max_response_length=10),
            SpliceFailure.TOO_LONG,
            "after_error",
        ),
        (
            _verbatim(RECON.replace("Wait,", "Wait<|im_end|>")),
            LENIENT,
            SpliceFailure.SPECIAL_TOKEN_IN_TEXT,
            "after_error",
        ),
        (_anchor("Then 56 + 1", "Wait, \\boxed{57}"), LENIENT, SpliceFailure.ANCHOR_NOT_FOUND, "after_error"),
        (_anchor("54", "Wait, \\boxed{57}"), LENIENT, SpliceFailure.ANCHOR_AMBIGUOUS, "after_error"),
        (_anchor("54", "Wait, \\boxed{57}"), LENIENT, SpliceFailure.ANCHOR_AMBIGUOUS, "before_error"),
        (_anchor("Then 54", "Then 54 + 1"), LENIENT, SpliceFailure.NO_DEPARTURE, "before_error"),
        (_anchor("Then 54 + 1 = 55.", "So the answer is"), LENIENT, SpliceFailure.NO_DEPARTURE, "after_error"),
    ],
)
def test_rejections_carry_their_reason(tapo_tokenizer, parsed, config, failure, prefix_end):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(WRONG, ids, parsed, tapo_tokenizer, config, prefix_end=prefix_end)
    assert result.failure == failure and not result.ok


def test_length_limit_counts_eos(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    length = len(splice_trajectory(WRONG, ids, _verbatim(RECON), tapo_tokenizer, LENIENT).token_ids)
    exact = dataclasses.replace(LENIENT, max_response_length=length)
    assert splice_trajectory(WRONG, ids, _verbatim(RECON), tapo_tokenizer, exact).ok
    short = dataclasses.replace(LENIENT, max_response_length=length - 1)
    assert splice_trajectory(WRONG, ids, _verbatim(RECON), tapo_tokenizer, short).failure == SpliceFailure.TOO_LONG


def test_an_empty_marker_disables_the_final_answer_check(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    recon = "First, 7 * 8 = 54.\nWait, 7 * 8 is 56, so the sum is 57"
    assert splice_trajectory(
        WRONG, ids, _verbatim(recon), tapo_tokenizer, dataclasses.replace(LENIENT, final_answer_marker="")
    ).ok


def test_a_final_answer_that_y_minus_already_wrote_does_not_count(tapo_tokenizer):
    # The boxed answer is y-'s own text, on the line where the reconstruction departs: the
    # correction itself gives no final answer.
    wrong = "My guess is \\boxed{55}; check: 7 * 8 = 54, so 54 + 1 = 55."
    recon = "My guess is \\boxed{55}; check: 7 * 8 = 56, so 56 + 1 = 57."
    ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    result = splice_trajectory(wrong, ids, _verbatim(recon), tapo_tokenizer, LENIENT)
    assert result.failure == SpliceFailure.NO_FINAL_ANSWER
    # Changing only the digits inside y-'s own \boxed{ is not a final answer of the correction either.
    changed = WRONG.replace("{55}", "{56}")
    own = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    assert (
        splice_trajectory(WRONG, own, _verbatim(changed), tapo_tokenizer, LENIENT).failure
        == SpliceFailure.NO_FINAL_ANSWER
    )
    fixed = splice_trajectory(wrong, ids, _verbatim(recon + " So \\boxed{57}."), tapo_tokenizer, LENIENT)
    assert fixed.ok


# --- full reconstruction (the paper's ablation) ---------------------------------------------------
FULL = SplicingConfig(full_reconstruction=True)


def test_full_reconstruction_keeps_none_of_y_minus_ids(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    own_ids = [token for char in WRONG for token in tapo_tokenizer.encode(char, add_special_tokens=False)]
    result = splice_trajectory(WRONG, own_ids, _verbatim(RECON), tapo_tokenizer, FULL)  # min_prefix_tokens 32
    assert result.ok
    assert result.token_ids == (*tapo_tokenizer.encode(RECON, add_special_tokens=False), tapo_tokenizer.eos_token_id)
    assert result.token_ids[:5] != tuple(own_ids[:5]) and ids != own_ids
    assert (result.cut_chars, result.cut_tokens, result.prefix_fraction) == (0, 0, 0.0)
    assert result.text == result.appended_text == RECON
    # The spliced default keeps y-'s ids and refuses the short prefix instead.
    assert splice_trajectory(WRONG, own_ids, _verbatim(RECON), tapo_tokenizer, SplicingConfig()).failure == (
        SpliceFailure.PREFIX_TOO_SHORT
    )


@pytest.mark.parametrize(
    "recon, config, failure",
    [
        (WRONG, FULL, SpliceFailure.NO_DEPARTURE),
        ("First, 7 * 8 = 54.\nWait, 7 * 8 is 56, so 57", FULL, SpliceFailure.NO_FINAL_ANSWER),
        (RECON, dataclasses.replace(FULL, max_response_length=5), SpliceFailure.TOO_LONG),
        (RECON.replace("Wait,", "Wait<|im_end|>"), FULL, SpliceFailure.SPECIAL_TOKEN_IN_TEXT),
    ],
)
def test_full_reconstruction_rejections(tapo_tokenizer, recon, config, failure):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    assert splice_trajectory(WRONG, ids, _verbatim(recon), tapo_tokenizer, config).failure == failure


def test_full_reconstruction_refuses_anchor_output(tapo_tokenizer):
    with pytest.raises(ValueError, match="full_reconstruction needs a verbatim synthesis"):
        splice_trajectory(WRONG, [], _anchor("Then 54", "Wait, \\boxed{57}"), tapo_tokenizer, FULL)


def test_eos_override(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(
        WRONG, ids, _verbatim(RECON), tapo_tokenizer, LENIENT, eos_token_id=tapo_tokenizer.pad_token_id
    )
    assert result.token_ids[-1] == tapo_tokenizer.pad_token_id


def test_multibyte_characters_are_never_split_at_the_cut(tapo_tokenizer):
    wrong = "Le résultat: 漢字🙂 = 54, \\boxed{54}"
    recon = "Le résultat: 漢字🙂 = 56, \\boxed{56}"
    ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    result = splice_trajectory(wrong, ids, _verbatim(recon), tapo_tokenizer, LENIENT)
    assert result.ok and result.text == recon
    assert tapo_tokenizer.decode(ids[: result.cut_tokens]) == wrong[: result.cut_chars]
    assert tapo_tokenizer.decode(list(result.token_ids[:-1])) == recon


def test_a_failed_parse_is_refused_loudly(tapo_tokenizer):
    with pytest.raises(ValueError, match="needs a parsed synthesis"):
        splice_trajectory(
            WRONG, [], ParsedSynthesis(mode="verbatim", failure="missing_reconstruction"), tapo_tokenizer, LENIENT
        )


# --- properties on byte-level BPE ---------------------------------------------------------------
_PIECES = st.sampled_from(
    [
        "7",
        " * ",
        "8",
        " = ",
        "54",
        "56",
        ".",
        "\n",
        "\n\n",
        "  ",
        " ",
        "Wait",
        ", ",
        "the answer is ",
        "\\boxed{",
        "}",
        "é",
        "漢",
        "🙂",
        "\t",
        "First",
        " step",
        "<|im_end|>",
        "\u00a0",
        "\x1c",
    ]
)
_TEXT = st.lists(st.one_of(_PIECES, st.text(max_size=4)), max_size=40).map("".join)
_WHITESPACE = st.sampled_from([" ", "\n", "  ", "\t", " \n"])


@st.composite
def _wrong_and_reconstruction(draw):
    """y- and a reconstruction that reproduces a prefix of y- (whitespace perturbed) then diverges
    arbitrarily: mostly failures, for the failure-path properties."""
    wrong = draw(_TEXT)
    words = wrong[: draw(st.integers(0, len(wrong)))].split()
    copied = "".join(word + draw(_WHITESPACE) for word in words)
    return wrong, (copied + draw(_TEXT) + draw(st.sampled_from(["", " \\boxed{56}"]))).strip()


# Text a correction writes: no special tokens, so a well-formed construction can succeed.
_FRESH = st.lists(
    st.sampled_from(["Wait", ", ", "7 * 8 is 56", " not 54.", "\n", " so", " 56 + 1 = 57", "é", "漢", "🙂", " "]),
    max_size=12,
).map("".join)


@st.composite
def _splice_case(draw):
    """A well-formed construction: y-, and a reconstruction = a copy of a prefix of y- (whitespace
    runs perturbed) + a fresh correction that departs from y- and ends with a final answer."""
    wrong = draw(_TEXT)
    words = wrong.split()
    kept = draw(st.integers(min(1, len(words)), len(words)))
    copied = "".join(word + draw(_WHITESPACE) for word in words[:kept])
    correction = "Hmm, " + draw(_FRESH) + " So the answer is \\boxed{" + str(draw(st.integers(0, 999))) + "}."
    return wrong, copied + correction


def _splice_case_config(draw_min_prefix, draw_max_length, line_boundary):
    return SplicingConfig(
        min_prefix_tokens=draw_min_prefix,
        max_response_length=draw_max_length,
        cut_at_line_boundary=line_boundary,
    )


_CASE_SETTINGS = dict(
    case=_splice_case(),
    min_prefix_tokens=st.sampled_from([0, 0, 1, 2]),
    max_response_length=st.one_of(st.none(), st.integers(60, 400)),
    cut_at_line_boundary=st.booleans(),
)


def _check_success(tokenizer, wrong, wrong_ids, recon, config, result):
    """Every invariant of a successful splice."""
    eos = tokenizer.eos_token_id
    # The kept prefix is y-'s own ids, and decodes to a prefix of y-.
    assert result.token_ids[: result.cut_tokens] == tuple(wrong_ids[: result.cut_tokens])
    kept_text = tokenizer.decode(list(wrong_ids[: result.cut_tokens]))
    assert wrong.startswith(kept_text) and kept_text == wrong[: result.cut_chars]
    # EOS last, and only there after the cut; within the length limit; long enough a prefix.
    assert result.token_ids[-1] == eos and eos not in result.token_ids[result.cut_tokens : -1]
    assert config.max_response_length is None or len(result.token_ids) <= config.max_response_length
    assert result.cut_tokens >= config.min_prefix_tokens
    assert result.text == wrong[: result.cut_chars] + result.appended_text
    assert tokenizer.decode(list(result.token_ids[:-1])) == result.text
    # The trajectory says what the reconstruction says; only whitespace may come from y- instead.
    assert _normalised(result.text) == _normalised(recon)
    # The final answer is in the corrected continuation, which the trajectory ends with.
    departure, recon_departure = find_departure(wrong, recon)
    continuation = recon[recon_departure:]
    assert config.final_answer_marker in continuation and result.text.endswith(continuation)
    # The cut is the LAST token boundary at or before the departure (or the line start).
    target = wrong.rfind("\n", 0, departure) + 1 if config.cut_at_line_boundary else departure
    assert result.cut_chars <= target
    for count in range(result.cut_tokens + 1, len(wrong_ids) + 1):
        longer = tokenizer.decode(wrong_ids[:count])
        assert len(longer) > target or not wrong.startswith(longer)


def _splice_and_check(tokenizer, case, min_prefix_tokens, max_response_length, cut_at_line_boundary):
    wrong, recon = case
    config = _splice_case_config(min_prefix_tokens, max_response_length, cut_at_line_boundary)
    wrong_ids = tokenizer.encode(wrong, add_special_tokens=False)
    result = splice_trajectory(wrong, wrong_ids, _verbatim(recon), tokenizer, config)
    event("ok" if result.ok else f"failure: {result.failure.value}")
    if result.ok:
        target(float(result.cut_tokens), label="kept prefix tokens")
        _check_success(tokenizer, wrong, wrong_ids, recon, config, result)
    return result


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_CASE_SETTINGS)
def test_splice_properties(tapo_tokenizer, case, min_prefix_tokens, max_response_length, cut_at_line_boundary):
    _splice_and_check(tapo_tokenizer, case, min_prefix_tokens, max_response_length, cut_at_line_boundary)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**_CASE_SETTINGS)
def test_splice_properties_with_the_real_qwen3_tokenizer(
    qwen_tokenizer, case, min_prefix_tokens, max_response_length, cut_at_line_boundary
):
    _splice_and_check(qwen_tokenizer, case, min_prefix_tokens, max_response_length, cut_at_line_boundary)


@pytest.mark.parametrize("tokenizer_fixture", ["tapo_tokenizer", "qwen_tokenizer"])
def test_most_generated_constructions_splice(request, tokenizer_fixture):
    """The property test reaches its success assertions on most examples, not a few."""
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    outcomes: collections.Counter[str] = collections.Counter()

    @settings(max_examples=150, deadline=None, database=None)
    @given(**_CASE_SETTINGS)
    def collect(case, min_prefix_tokens, max_response_length, cut_at_line_boundary):
        result = _splice_and_check(tokenizer, case, min_prefix_tokens, max_response_length, cut_at_line_boundary)
        outcomes["ok" if result.ok else result.failure.value] += 1

    collect()
    share = outcomes["ok"] / sum(outcomes.values())
    assert share >= 0.75, outcomes


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pair=_wrong_and_reconstruction(),
    min_prefix_tokens=st.integers(0, 6),
    max_response_length=st.one_of(st.none(), st.integers(2, 80)),
    cut_at_line_boundary=st.booleans(),
    marker=st.sampled_from(["\\boxed", ""]),
)
def test_splice_failure_properties(
    tapo_tokenizer, pair, min_prefix_tokens, max_response_length, cut_at_line_boundary, marker
):
    """Arbitrary reconstructions: each failure has its stated cause; a success is well formed."""
    wrong, recon = pair
    assume(recon)
    config = SplicingConfig(
        min_prefix_tokens=min_prefix_tokens,
        max_response_length=max_response_length,
        cut_at_line_boundary=cut_at_line_boundary,
        final_answer_marker=marker,
    )
    wrong_ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    result = splice_trajectory(wrong, wrong_ids, _verbatim(recon), tapo_tokenizer, config)
    event("ok" if result.ok else f"failure: {result.failure.value}")
    continuation = recon[find_departure(wrong, recon)[1] :]
    if result.ok:
        _check_success(tapo_tokenizer, wrong, wrong_ids, recon, config, result)
        return
    assert isinstance(result.failure, SpliceFailure)
    if result.failure == SpliceFailure.NO_DEPARTURE:
        assert not continuation.strip() and _normalised(wrong).startswith(_normalised(recon))
        return
    assert continuation.strip()
    if result.failure == SpliceFailure.NO_FINAL_ANSWER:
        assert marker not in continuation
        return
    assert marker in continuation
    if result.failure == SpliceFailure.PREFIX_TOO_SHORT:
        assert result.cut_tokens < min_prefix_tokens and result.token_ids == ()
        assert result.text == wrong[: result.cut_chars] + result.appended_text
    elif result.failure == SpliceFailure.TOO_LONG:
        assert len(result.token_ids) > max_response_length and result.token_ids[-1] == tapo_tokenizer.eos_token_id
    elif result.failure == SpliceFailure.SPECIAL_TOKEN_IN_TEXT:
        assert any(token in result.appended_text for token in tapo_tokenizer.all_special_tokens)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong=_TEXT, recon=_TEXT, anchor=_TEXT, mode=st.sampled_from(["verbatim", "anchor"]))
def test_splice_never_raises_on_any_text(tapo_tokenizer, wrong, recon, anchor, mode):
    parsed = ParsedSynthesis(mode=mode, anchor=anchor, reconstruction=recon)
    wrong_ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    result = splice_trajectory(wrong, wrong_ids, parsed, tapo_tokenizer, SplicingConfig(min_prefix_tokens=0))
    assert result.ok or isinstance(result.failure, SpliceFailure)
    if result.ok:
        assert result.token_ids[: result.cut_tokens] == tuple(wrong_ids[: result.cut_tokens])
        assert result.token_ids[-1] == tapo_tokenizer.eos_token_id


class _TokenizerWithoutRustBackend:
    """A tokenizer offering only the generic HF methods, as a slow (Python) tokenizer does."""

    def __init__(self, fast):
        self._fast = fast
        self.eos_token_id = fast.eos_token_id
        self.all_special_ids = fast.all_special_ids

    def encode(self, text, add_special_tokens):
        return self._fast.encode(text, add_special_tokens=add_special_tokens)

    def decode(self, ids, skip_special_tokens, clean_up_tokenization_spaces):
        return self._fast.decode(
            ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=clean_up_tokenization_spaces
        )


def test_tokenizers_without_a_rust_backend_splice_identically(tapo_tokenizer):
    wrong = "Le résultat: 漢字🙂 = 54.\nDonc \\boxed{54}"
    recon = "Le résultat: 漢字🙂 = 56.\nDonc \\boxed{56}"
    ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    generic = splice_trajectory(wrong, ids, _verbatim(recon), _TokenizerWithoutRustBackend(tapo_tokenizer), LENIENT)
    assert generic.ok
    assert generic == splice_trajectory(wrong, ids, _verbatim(recon), tapo_tokenizer, LENIENT)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pair=_wrong_and_reconstruction(), cuts=st.lists(st.integers(0, 200), max_size=12))
def test_the_kept_prefix_is_the_rollouts_own_ids_for_any_tokenisation(tapo_tokenizer, pair, cuts):
    # A rollout's ids need not be encode(text): here the text is encoded in arbitrary pieces.
    wrong, recon = pair
    assume(recon)
    bounds = sorted({0, len(wrong), *(cut for cut in cuts if cut < len(wrong))})
    own_ids = [
        token
        for start, end in zip(bounds, bounds[1:])
        for token in tapo_tokenizer.encode(wrong[start:end], add_special_tokens=False)
    ]
    result = splice_trajectory(
        wrong, own_ids, _verbatim(recon), tapo_tokenizer, SplicingConfig(min_prefix_tokens=0, final_answer_marker="")
    )
    assert result.ok or isinstance(result.failure, SpliceFailure)
    if result.ok:
        assert result.token_ids[: result.cut_tokens] == tuple(own_ids[: result.cut_tokens])
        assert tapo_tokenizer.decode(own_ids[: result.cut_tokens]) == wrong[: result.cut_chars]
        assert _normalised(result.text) == _normalised(recon)


# A step-per-line answer (the toy's form) whose second line is wrong, and two reconstructions of it.
STEPS_WRONG = "47 + 5 = 52\n52 - 8 = 45\n45 + 6 = 51\n\\boxed{51}"
REFLECTS_AFTER_IT = "47 + 5 = 52\n52 - 8 = 45\nWait, 52 - 8 = 44, not 45.\n44 + 6 = 50\n\\boxed{50}"
REWRITES_IT = "47 + 5 = 52\n52 - 8 = 44\nWait, 52 - 8 = 44, not 44.\n44 + 6 = 50\n\\boxed{50}"


def test_a_copy_that_rewrites_the_wrong_step_is_dropped_only_when_asked(tapo_tokenizer):
    ids = tapo_tokenizer.encode(STEPS_WRONG, add_special_tokens=False)
    strict = dataclasses.replace(LENIENT, reject_inside_line_departure=True)
    # The silent correction: the copy writes 44 inside the wrong line, the "reflection" is a no-op.
    rewritten = splice_trajectory(STEPS_WRONG, ids, _verbatim(REWRITES_IT), tapo_tokenizer, LENIENT)
    assert rewritten.ok and rewritten.appended_text.lstrip().startswith("44\nWait")
    assert splice_trajectory(STEPS_WRONG, ids, _verbatim(REWRITES_IT), tapo_tokenizer, strict).failure == (
        SpliceFailure.DEPARTURE_INSIDE_LINE)
    # TAPO's form: the wrong line kept whole, the reflection right after it; the option changes nothing.
    proper = splice_trajectory(STEPS_WRONG, ids, _verbatim(REFLECTS_AFTER_IT), tapo_tokenizer, strict)
    assert proper == splice_trajectory(STEPS_WRONG, ids, _verbatim(REFLECTS_AFTER_IT), tapo_tokenizer, LENIENT)
    assert proper.ok and proper.appended_text.lstrip().startswith("Wait, 52 - 8 = 44, not 45.")


def test_under_before_error_a_rewritten_wrong_step_is_the_intended_form_and_is_kept(tapo_tokenizer):
    # prefix_end="before_error" keeps y- up to the mistake and has the correction rewrite it: the copy
    # leaves the wrong line inside it by design, so the guard (an after_error check) drops nothing.
    ids = tapo_tokenizer.encode(STEPS_WRONG, add_special_tokens=False)
    strict = dataclasses.replace(LENIENT, reject_inside_line_departure=True)
    corrected = "47 + 5 = 52\n52 - 8 = 44\n44 + 6 = 50\n\\boxed{50}"
    kept = splice_trajectory(STEPS_WRONG, ids, _verbatim(corrected), tapo_tokenizer, strict, prefix_end="before_error")
    assert kept == splice_trajectory(STEPS_WRONG, ids, _verbatim(corrected), tapo_tokenizer, LENIENT,
                                     prefix_end="before_error")
    assert kept.ok and kept.appended_text.lstrip().startswith("44\n44 + 6 = 50")


@pytest.mark.parametrize("wrong, departure, inside", [
    ("ab\ncd", 0, False), ("ab\ncd", 3, False), ("ab\ncd", 4, True), ("ab\n  cd", 5, False),
    ("ab\ncd", 5, False), ("ab\ncd\n\n", 6, False), ("ab\ncd", 1, True),
])
def test_a_departure_is_inside_a_line_after_its_text_and_before_the_end(wrong, departure, inside):
    assert departs_inside_line(wrong, departure) is inside


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_splice_case())
def test_rejecting_inside_line_departures_drops_exactly_those_and_changes_no_other_splice(tapo_tokenizer, case):
    wrong, recon = case
    ids = tapo_tokenizer.encode(wrong, add_special_tokens=False)
    plain = splice_trajectory(wrong, ids, _verbatim(recon), tapo_tokenizer, LENIENT)
    strict = splice_trajectory(wrong, ids, _verbatim(recon), tapo_tokenizer,
                               dataclasses.replace(LENIENT, reject_inside_line_departure=True))
    departure, _ = find_departure(wrong, recon)
    if plain.failure is SpliceFailure.NO_DEPARTURE:
        assert strict.failure is SpliceFailure.NO_DEPARTURE
    elif departs_inside_line(wrong, departure):
        event("departure inside a line")
        assert strict.failure is SpliceFailure.DEPARTURE_INSIDE_LINE
    else:
        event("departure at a line start or after the answer")
        assert strict == plain
        if strict.ok:  # what y- kept ends its line: only whitespace of y- stands between it and the new text
            kept_line = wrong[wrong.rfind("\n", 0, departure) + 1: departure]
            assert not kept_line.strip() or not wrong[departure:].strip()
