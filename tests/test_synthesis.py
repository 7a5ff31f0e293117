"""Synthesis prompts (templates, token budget) and tolerant parsing of the model's output."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe_tapo.config import SynthesisConfig
from recipe_tapo.synthesis import (
    OMISSION_MARKER,
    SynthesisFailure,
    build_synthesis_prompt,
    load_template,
    parse_synthesis_output,
    render_synthesis_prompt,
)

QUESTION = "What is 7 * 8 + 1?"
WRONG = "First, 7 * 8 = 54.\nThen 54 + 1 = 55.\nSo the answer is \\boxed{55}."
RIGHT = "First, 7 * 8 = 56.\nThen 56 + 1 = 57.\nSo the answer is \\boxed{57}."


# --- templates ----------------------------------------------------------------------------------
TEMPLATE_CASES = [
    (mode, prefix_end) for mode in ("verbatim", "anchor") for prefix_end in ("after_error", "before_error")
]


@pytest.mark.parametrize("mode, prefix_end", TEMPLATE_CASES)
def test_templates_ask_for_their_blocks(mode, prefix_end):
    template = load_template(SynthesisConfig(mode=mode, prefix_end=prefix_end))
    tags = ["analysis", "anchor", "reconstruction"] if mode == "anchor" else ["analysis", "reconstruction"]
    for tag in tags:
        assert f"<{tag}>" in template and f"</{tag}>" in template
    assert ("<anchor>" in template) == (mode == "anchor")
    assert "\\boxed{}" in template
    for placeholder in ("{{question}}", "{{wrong_answer}}", "{{right_answer}}"):
        assert template.count(placeholder) == 1


def test_the_default_templates_keep_the_erroneous_step_and_reflect_on_it():
    verbatim = load_template(SynthesisConfig())
    assert "up to and INCLUDING the step that contains the first critical error" in verbatim
    assert "reflection in the first person on that mistake" in verbatim
    assert "not including" not in verbatim
    anchor = load_template(SynthesisConfig(mode="anchor"))
    assert "the WHOLE step that contains that first error" in anchor
    assert "kept up to the END of this quote" in anchor
    assert "start with a short, natural reflection in the first person on the mistake" in anchor


def test_the_before_error_templates_keep_the_other_reading():
    verbatim = load_template(SynthesisConfig(prefix_end="before_error"))
    assert "up to (not including) the first critical error" in verbatim
    anchor = load_template(SynthesisConfig(mode="anchor", prefix_end="before_error"))
    assert "the beginning of the step that contains that first error" in anchor
    assert "kept up to the point where this quote begins" in anchor
    assert len({load_template(SynthesisConfig(mode=m, prefix_end=p)) for m, p in TEMPLATE_CASES}) == 4


def test_a_users_own_template_is_used_and_checked(tmp_path, tapo_tokenizer):
    own = tmp_path / "tiny.txt"
    own.write_text("Q {{question}} W {{wrong_answer}} R {{right_answer}} <reconstruction>", encoding="utf-8")
    config = SynthesisConfig(template_path=str(own))
    assert render_synthesis_prompt(config, "q?", "w.", "r.") == "Q q? W w. R r. <reconstruction>"
    prompt = build_synthesis_prompt("q?", "w.", "r.", tapo_tokenizer, config)
    assert prompt.messages[0]["content"] == "Q q? W w. R r. <reconstruction>"
    own.write_text("Q {{question}} W {{wrong_answer}}", encoding="utf-8")
    with pytest.raises(ValueError, match=r"tapo.synthesis.template_path: template .*tiny.txt.* lacks .*right_answer"):
        SynthesisConfig(template_path=str(own))
    with pytest.raises(ValueError, match="tapo.synthesis.template_path: no such file"):
        SynthesisConfig(template_path=str(tmp_path / "gone.txt"))


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="synthesis.mode"):
        SynthesisConfig(mode="paraphrase")


def test_render_inserts_values_once_and_never_rescans_them():
    # Braces (LaTeX) and placeholder-like text in an answer must come through untouched.
    tricky_wrong = "x = {a} and {{right_answer}} \\frac{1}{2}"
    prompt = render_synthesis_prompt(SynthesisConfig(), QUESTION, tricky_wrong, RIGHT)
    assert tricky_wrong in prompt and RIGHT in prompt and QUESTION in prompt
    assert "{{" not in prompt.replace(tricky_wrong, "")
    assert prompt.index(tricky_wrong) < prompt.index(RIGHT)


# --- token budget -------------------------------------------------------------------------------
def _count(tokenizer, prompt) -> int:
    rendered = tokenizer.apply_chat_template(prompt.messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer.encode(rendered, add_special_tokens=False))


def test_a_prompt_that_fits_is_unchanged(tapo_tokenizer):
    prompt = build_synthesis_prompt(QUESTION, WRONG, RIGHT, tapo_tokenizer, SynthesisConfig())
    assert prompt.ok and prompt.omitted_right_tokens == 0
    expected = render_synthesis_prompt(SynthesisConfig(), QUESTION, WRONG, RIGHT)
    assert prompt.messages == [{"role": "user", "content": expected}]
    assert prompt.num_tokens == _count(tapo_tokenizer, prompt)


@pytest.mark.parametrize("mode", ["verbatim", "anchor"])
def test_a_long_right_answer_loses_its_middle_first(tapo_tokenizer, mode):
    long_right = "Step one: 7 * 8 = 56.\n" + "We add the numbers carefully.\n" * 150 + "Finally \\boxed{57}."
    full = build_synthesis_prompt(QUESTION, WRONG, long_right, tapo_tokenizer, SynthesisConfig(mode=mode))
    budget = full.num_tokens - 300
    config = SynthesisConfig(mode=mode, max_prompt_tokens=budget, min_right_answer_tokens=50)
    prompt = build_synthesis_prompt(QUESTION, WRONG, long_right, tapo_tokenizer, config)
    assert prompt.ok
    assert prompt.num_tokens == _count(tapo_tokenizer, prompt) <= budget
    assert prompt.omitted_right_tokens >= 300
    content = prompt.messages[0]["content"]
    assert WRONG in content and QUESTION in content  # never shortened
    assert "Step one: 7 * 8 = 56." in content and "Finally \\boxed{57}." in content  # head and tail kept
    assert OMISSION_MARKER.format(count=prompt.omitted_right_tokens) in content


def test_a_pair_that_cannot_fit_is_skipped_not_truncated(tapo_tokenizer):
    long_wrong = "We add the numbers carefully.\n" * 200
    config = SynthesisConfig(max_prompt_tokens=600, min_right_answer_tokens=10)
    prompt = build_synthesis_prompt(QUESTION, long_wrong, RIGHT, tapo_tokenizer, config)
    assert prompt.failure == SynthesisFailure.PROMPT_TOO_LONG and not prompt.ok
    assert prompt.messages is None


def test_the_right_answer_is_not_cut_below_its_minimum(tapo_tokenizer):
    long_right = "We add the numbers carefully.\n" * 40
    full = build_synthesis_prompt(QUESTION, WRONG, long_right, tapo_tokenizer, SynthesisConfig())
    right_tokens = len(tapo_tokenizer.encode(long_right, add_special_tokens=False))
    # Fitting would need the right answer cut to about 20 tokens; the minimum is 100.
    budget = full.num_tokens - (right_tokens - 20)
    config = SynthesisConfig(max_prompt_tokens=budget, min_right_answer_tokens=100)
    assert (
        build_synthesis_prompt(QUESTION, WRONG, long_right, tapo_tokenizer, config).failure
        == SynthesisFailure.PROMPT_TOO_LONG
    )


# --- parsing ------------------------------------------------------------------------------------
RECON = "First, 7 * 8 = 54.\nWait, 7 * 8 is 56. Then 56 + 1 = 57, so \\boxed{57}."


@pytest.mark.parametrize(
    "output",
    [
        f"<analysis>7*8 is wrong</analysis>\n<reconstruction>\n{RECON}\n</reconstruction>",
        f"Sure!\n<analysis>7*8 is wrong</analysis>\n<reconstruction>{RECON}</reconstruction>\nHope this helps.",
        f"<ANALYSIS>7*8 is wrong</Analysis><Reconstruction>{RECON}</RECONSTRUCTION>",
        f"< analysis >7*8 is wrong</ analysis >< reconstruction >{RECON}< / reconstruction >",
        f"<analysis>7*8 is wrong</analysis>\n<reconstruction>\n{RECON}",  # missing closing tag / truncated
        f"```xml\n<analysis>7*8 is wrong</analysis>\n<reconstruction>\n{RECON}\n</reconstruction>\n```",
        f"```\n<analysis>7*8 is wrong</analysis>\n<reconstruction>\n{RECON}\n```",  # fence + missing tag
        f"<analysis>7*8 is wrong</analysis>\n<reconstruction>\n```markdown\n{RECON}\n```\n</reconstruction>",
        f"<analysis>7*8 is wrong</analysis><reconstruction>draft</reconstruction>\n"
        f"<reconstruction>{RECON}</reconstruction>",
        f"<analysis>7*8 is wrong</analysis><reconstruction>{RECON}</reconstruction><reconstruction>cut off",
        f"<analysis>7*8 is wrong</analysis><reconstruction>{RECON}</reconstruction>\n<reconstruction></reconstruction>",
        f"<think>draft <reconstruction>old</reconstruction></think>\n"
        f"<analysis>7*8 is wrong</analysis><reconstruction>{RECON}</reconstruction>",
    ],
)
def test_verbatim_outputs_that_models_really_write_are_parsed(output):
    parsed = parse_synthesis_output(output, "verbatim")
    assert parsed.ok
    assert parsed.reconstruction == RECON
    assert parsed.analysis == "7*8 is wrong"


def test_analysis_is_optional():
    parsed = parse_synthesis_output(f"<reconstruction>{RECON}</reconstruction>", "verbatim")
    assert parsed.ok and parsed.analysis == "" and parsed.reconstruction == RECON


def test_code_inside_a_reconstruction_is_kept():
    recon = "Compute:\n```python\nprint(7 * 8)\n```\nso \\boxed{56}."
    assert parse_synthesis_output(f"<reconstruction>{recon}</reconstruction>", "verbatim").reconstruction == recon


@pytest.mark.parametrize(
    "output, mode, failure",
    [
        ("", "verbatim", SynthesisFailure.EMPTY_OUTPUT),
        ("  \n\t ", "anchor", SynthesisFailure.EMPTY_OUTPUT),
        (
            "<analysis>the error is in step 2</analysis> I cannot rewrite it.",
            "verbatim",
            SynthesisFailure.MISSING_RECONSTRUCTION,
        ),
        (
            "<analysis>the error is in step 2</analysis><reconstruction>   </reconstruction>",
            "verbatim",
            SynthesisFailure.EMPTY_RECONSTRUCTION,
        ),
        (
            "<analysis>x</analysis><reconstruction></reconstruction><reconstruction>\n</reconstruction>",
            "verbatim",
            SynthesisFailure.EMPTY_RECONSTRUCTION,
        ),
        (
            "<analysis>x</analysis><reconstruction>Wait, \\boxed{57}</reconstruction>",
            "anchor",
            SynthesisFailure.MISSING_ANCHOR,
        ),
        (
            '<anchor> "" </anchor><reconstruction>Wait, \\boxed{57}</reconstruction>',
            "anchor",
            SynthesisFailure.EMPTY_ANCHOR,
        ),
        ("<analysis>x</analysis><anchor>Then 54", "anchor", SynthesisFailure.MISSING_RECONSTRUCTION),
    ],
)
def test_failures_are_reported_with_their_reason(output, mode, failure):
    parsed = parse_synthesis_output(output, mode)
    assert parsed.failure == failure and not parsed.ok
    assert parsed.reconstruction == "" and parsed.anchor == ""


@pytest.mark.parametrize(
    "anchor_block, anchor",
    [
        ("Then 54 + 1 = 55.", "Then 54 + 1 = 55."),
        ('"Then 54 + 1 = 55."', "Then 54 + 1 = 55."),
        ("\u201cThen 54 + 1\u2026\u201d", "Then 54 + 1"),
        ("`Then 54 + 1 ...`", "Then 54 + 1"),
    ],
)
def test_anchor_mode_parses_the_quote_without_its_quotation_marks(anchor_block, anchor):
    output = (
        f"<analysis>x</analysis>\n<anchor>{anchor_block}</anchor>\n"
        "<reconstruction>Wait, 56 + 1 = 57, \\boxed{57}.</reconstruction>"
    )
    parsed = parse_synthesis_output(output, "anchor")
    assert parsed.ok and parsed.anchor == anchor
    assert parsed.reconstruction == "Wait, 56 + 1 = 57, \\boxed{57}."


def test_verbatim_mode_ignores_an_anchor_block():
    parsed = parse_synthesis_output(f"<anchor>x</anchor><reconstruction>{RECON}</reconstruction>", "verbatim")
    assert parsed.ok and parsed.anchor == ""


_TAG_FRAGMENTS = st.sampled_from(
    [
        "<analysis>",
        "</analysis>",
        "<anchor>",
        "</anchor>",
        "<reconstruction>",
        "</reconstruction>",
        "<RECONSTRUCTION >",
        "< /anchor>",
        "```",
        "```xml\n",
        "<think>",
        "</think>",
        "\n",
        " ",
        '"',
        "\u2026",
        "...",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    pieces=st.lists(st.one_of(_TAG_FRAGMENTS, st.text(max_size=20)), max_size=25),
    mode=st.sampled_from(["verbatim", "anchor"]),
)
def test_parser_never_raises_and_returns_parts_or_a_reason(pieces, mode):
    parsed = parse_synthesis_output("".join(pieces), mode)
    if parsed.ok:
        assert parsed.reconstruction.strip() == parsed.reconstruction != ""
        assert (parsed.anchor != "") == (mode == "anchor")
    else:
        assert isinstance(parsed.failure, SynthesisFailure)


@settings(max_examples=200, deadline=None)
@given(text=st.text(), mode=st.sampled_from(["verbatim", "anchor"]))
def test_parser_never_raises_on_arbitrary_text(text, mode):
    parsed = parse_synthesis_output(text, mode)
    assert parsed.ok or isinstance(parsed.failure, SynthesisFailure)


_BLOCK_TEXT = st.text(st.characters(blacklist_characters="<>`\"'\u201c\u2018"), min_size=1).filter(
    lambda text: text.strip() == text and text.strip(".\u2026") == text
)


@settings(max_examples=200, deadline=None)
@given(analysis=_BLOCK_TEXT, anchor=_BLOCK_TEXT, reconstruction=_BLOCK_TEXT)
def test_well_formed_outputs_round_trip(analysis, anchor, reconstruction):
    output = (
        f"<analysis>\n{analysis}\n</analysis>\n<anchor>{anchor}</anchor>\n"
        f"<reconstruction>\n{reconstruction}\n</reconstruction>"
    )
    parsed = parse_synthesis_output(output, "anchor")
    assert (parsed.analysis, parsed.anchor, parsed.reconstruction) == (analysis, anchor, reconstruction)
