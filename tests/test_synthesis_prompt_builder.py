"""Synthesis prompts built from the rollouts' token ids (SynthesisPromptBuilder), with the real
Qwen3 tokenizer in non-thinking mode: the ids say exactly the prompt's text, they are the
tokenizer's own tokenisation of that text where the answers are, and special tokens never leak in."""

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recipe_tapo.config import TapoConfig
from recipe_tapo.synthesis import SynthesisPromptBuilder, render_synthesis_prompt

NON_THINKING = {"enable_thinking": False}


@pytest.fixture(scope="module", params=["verbatim", "anchor"])
def builder(request, qwen_tokenizer):
    config = TapoConfig.from_dict({"synthesis": {"mode": request.param, "max_prompt_tokens": 100_000}}).synthesis
    return SynthesisPromptBuilder(qwen_tokenizer, config, NON_THINKING)


def _expected_text(builder, question, wrong, right):
    clean = builder.without_special_tokens
    content = render_synthesis_prompt(builder.config, clean(question), clean(wrong), clean(right))
    return builder.tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False, **NON_THINKING
    )


def _build(builder, question, wrong, right):
    encode = builder.tokenizer.encode
    return builder.build(question, builder.answer(encode(wrong, add_special_tokens=False)),
                         builder.answer(encode(right, add_special_tokens=False)))


# Reasoning-like lines: words, numbers, LaTeX, operators, non-ASCII, stray spaces.
_FIRST = st.sampled_from(["Step", "So", "42", "\\frac{1}{2}", "é", "中文", "(a+b)", "Wait,"])
_WORD = st.sampled_from(["Step", "so", "the", "sum", "is", "x", "=", "+", "42", "7", "\\frac{1}{2}", "\\boxed{8}",
                         "é", "中文", "👍", "Wait,", "(a+b)", ".", ":", "  "])
_LINE = st.lists(_WORD, min_size=1, max_size=12).map(" ".join)
# An answer starts with a non-space character (see the builder's docstring for one that does not).
_ANSWER = st.tuples(_FIRST, st.lists(_LINE, min_size=1, max_size=8).map("\n".join)).map(" ".join)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong=_ANSWER, right=_ANSWER, question=_LINE, trailing=st.sampled_from(["", "\n", ".", " \n\n"]))
def test_the_ids_are_the_prompt_text_tokenised_as_a_whole(builder, wrong, right, question, trailing):
    prompt = _build(builder, question, wrong + trailing, right)
    expected = _expected_text(builder, question, wrong + trailing, right)
    assert builder.tokenizer.decode(prompt.prompt_ids) == expected
    assert prompt.prompt_ids == builder.tokenizer.encode(expected, add_special_tokens=False)
    assert prompt.num_tokens == len(prompt.prompt_ids)
    assert prompt.messages[0]["content"] in expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(wrong=st.text(max_size=300), right=st.text(max_size=300))
def test_any_text_gives_ids_that_say_exactly_the_prompt(builder, wrong, right):
    prompt = _build(builder, "What is 2 + 2?", wrong, right)
    # Qwen3's tokenizer normalises text to NFC (e.g. the compatibility ideograph U+F9BA becomes U+4E86)
    # before any id exists, so the ids can only say the prompt in that form.
    expected = unicodedata.normalize("NFC", _expected_text(builder, "What is 2 + 2?", wrong, right))
    assert builder.tokenizer.decode(prompt.prompt_ids) == expected


def test_special_tokens_in_answers_and_question_never_reach_the_prompt(builder):
    tokenizer = builder.tokenizer
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    wrong_ids = tokenizer.encode("The sum is 5.\nSo \\boxed{5}.", add_special_tokens=False) + [eos]
    prompt = builder.build("What is <|im_start|>2 + 3?", builder.answer(wrong_ids),
                           builder.answer(tokenizer.encode("2 + 3 = 5<|im_end|>\n\\boxed{5}")))
    text = tokenizer.decode(prompt.prompt_ids)
    # the chat template's own markers only: one user turn, then the assistant's generation prompt
    assert text.count("<|im_start|>") == 2 and text.count("<|im_end|>") == 1
    assert "<think>\n\n</think>" in text  # non-thinking mode, as the rollout renders prompts
    assert "What is 2 + 3?" in text and "The sum is 5.\nSo \\boxed{5}." in text


def test_sampled_ids_that_are_not_the_tokenizers_own_are_kept(builder):
    """A rollout may sample a non-canonical split of its text; the prompt keeps what was sampled
    (the text is the same), so the policy reads its own answer as it wrote it."""
    tokenizer = builder.tokenizer
    line = "Step one: 1234 + 5678 = 6912\n"
    odd = [token for character in line for token in tokenizer.encode(character, add_special_tokens=False)]
    assert odd != tokenizer.encode(line, add_special_tokens=False)
    wrong_ids = odd + tokenizer.encode("So \\boxed{6912}.", add_special_tokens=False)
    prompt = builder.build("Add them.", builder.answer(wrong_ids), builder.answer(tokenizer.encode("\\boxed{6912}")))
    assert tokenizer.decode(prompt.prompt_ids) == _expected_text(builder, "Add them.", line + "So \\boxed{6912}.",
                                                                 "\\boxed{6912}")
    start = next(i for i in range(len(prompt.prompt_ids)) if prompt.prompt_ids[i : i + len(odd)] == odd)
    assert start > 0
