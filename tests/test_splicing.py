"""Splicing: departure point, token-exact kept prefix, rejections; property tests on byte-level BPE."""

import dataclasses

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from recipe_tapo.config import SplicingConfig
from recipe_tapo.splicing import SpliceFailure, find_departure, locate_anchor, splice_trajectory
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


def test_anchor_is_found_whitespace_tolerantly_and_first_occurrence_wins():
    assert locate_anchor(WRONG, "Then 54\n+  1") == WRONG.index("Then")
    assert locate_anchor("x 1\nx 1", "x 1") == 0
    assert locate_anchor(WRONG, "Then 56") is None
    assert locate_anchor(WRONG, "  ") is None


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


def test_anchor_mode_cuts_where_the_quote_begins(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    parsed = _anchor("Then 54 + 1 = 55.", "Wait, 7 * 8 is 56. Then 56 + 1 = 57, so \\boxed{57}.")
    result = splice_trajectory(WRONG, ids, parsed, tapo_tokenizer, LENIENT)
    assert result.ok
    assert result.text == "First, 7 * 8 = 54.\nWait, 7 * 8 is 56. Then 56 + 1 = 57, so \\boxed{57}."
    assert result.cut_chars <= WRONG.index("Then")


def test_anchor_mode_keeps_more_when_the_correction_repeats_the_quote(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(
        WRONG, ids, _anchor("Then 54", "Then 54 + 1 = 55. Wait, 54 is wrong: \\boxed{57}."), tapo_tokenizer, LENIENT
    )
    assert result.ok
    # Departure at "Wait" vs "So": y-'s own line break stands in for the reconstruction's space.
    assert result.text == "First, 7 * 8 = 54.\nThen 54 + 1 = 55.\nWait, 54 is wrong: \\boxed{57}."
    assert result.cut_chars > WRONG.index("Then")


@pytest.mark.parametrize(
    "parsed, config, failure",
    [
        (_verbatim("First, 7 * 8 = 54.\nThen 54"), LENIENT, SpliceFailure.NO_DEPARTURE),
        (_verbatim(WRONG), LENIENT, SpliceFailure.NO_DEPARTURE),
        (_verbatim("First, 7 * 8 = 54.\nWait, 7 * 8 is 56, so the sum is 57"), LENIENT, SpliceFailure.NO_FINAL_ANSWER),
        (_verbatim(RECON), SplicingConfig(min_prefix_tokens=1000), SpliceFailure.PREFIX_TOO_SHORT),
        (
            _verbatim(RECON),
            SplicingConfig(min_prefix_tokens=0, min_prefix_fraction=0.9),
            SpliceFailure.PREFIX_TOO_SHORT,
        ),
        (_verbatim("Let me start over: \\boxed{57}"), SplicingConfig(), SpliceFailure.PREFIX_TOO_SHORT),
        (_verbatim(RECON), SplicingConfig(min_prefix_tokens=1, max_response_length=10), SpliceFailure.TOO_LONG),
        (_verbatim(RECON.replace("Wait,", "Wait<|im_end|>")), LENIENT, SpliceFailure.SPECIAL_TOKEN_IN_TEXT),
        (_anchor("Then 56 + 1", "Wait, \\boxed{57}"), LENIENT, SpliceFailure.ANCHOR_NOT_FOUND),
        (_anchor("Then 54", "Then 54 + 1"), LENIENT, SpliceFailure.NO_DEPARTURE),
    ],
)
def test_rejections_carry_their_reason(tapo_tokenizer, parsed, config, failure):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(WRONG, ids, parsed, tapo_tokenizer, config)
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


def test_a_changed_final_answer_on_the_same_line_counts_as_final_answer(tapo_tokenizer):
    ids = tapo_tokenizer.encode(WRONG, add_special_tokens=False)
    result = splice_trajectory(WRONG, ids, _verbatim(WRONG.replace("{55}", "{56}")), tapo_tokenizer, LENIENT)
    assert result.ok and result.text.endswith("\\boxed{56}.")


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
    """y- and a reconstruction that reproduces a prefix of y- (whitespace perturbed) then diverges."""
    wrong = draw(_TEXT)
    words = wrong[: draw(st.integers(0, len(wrong)))].split()
    copied = "".join(word + draw(_WHITESPACE) for word in words)
    return wrong, (copied + draw(_TEXT) + draw(st.sampled_from(["", " \\boxed{56}"]))).strip()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pair=_wrong_and_reconstruction(),
    min_prefix_tokens=st.integers(0, 6),
    max_response_length=st.one_of(st.none(), st.integers(2, 80)),
    cut_at_line_boundary=st.booleans(),
    marker=st.sampled_from(["\\boxed", ""]),
)
def test_splice_properties(tapo_tokenizer, pair, min_prefix_tokens, max_response_length, cut_at_line_boundary, marker):
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
    if not result.ok:
        assert isinstance(result.failure, SpliceFailure)
        return
    eos = tapo_tokenizer.eos_token_id
    assert result.token_ids[: result.cut_tokens] == tuple(wrong_ids[: result.cut_tokens])
    assert tapo_tokenizer.decode(wrong_ids[: result.cut_tokens]) == wrong[: result.cut_chars]
    assert result.token_ids[-1] == eos and eos not in result.token_ids[result.cut_tokens : -1]
    assert max_response_length is None or len(result.token_ids) <= max_response_length
    assert result.cut_tokens >= min_prefix_tokens
    assert result.text == wrong[: result.cut_chars] + result.appended_text
    assert tapo_tokenizer.decode(list(result.token_ids[:-1])) == result.text
    # The trajectory says what the reconstruction says; only whitespace may come from y- instead.
    assert _normalised(result.text) == _normalised(recon)
    assert marker in result.text
    # The cut is the LAST token boundary at or before the departure (or the line start).
    departure = find_departure(wrong, recon)[0]
    target = wrong.rfind("\n", 0, departure) + 1 if cut_at_line_boundary else departure
    assert result.cut_chars <= target
    for count in range(result.cut_tokens + 1, len(wrong_ids) + 1):
        longer = tapo_tokenizer.decode(wrong_ids[:count])
        assert len(longer) > target or not wrong.startswith(longer)


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
