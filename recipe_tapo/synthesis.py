"""Synthesis prompts and the parsing of what the model writes back (docs/method.md, sections 2-3).

The prompt templates live in `config/prompts/` (package `recipe_tapo.conf`), one per synthesis
mode and reading of where the kept prefix ends (`tapo.synthesis.prefix_end`, section 9):
- `synthesis_verbatim.txt` (the paper's mode, default `after_error`): the model answers
  `<analysis>` and `<reconstruction>`, the latter being the wrong answer copied up to and including
  the step with its first error, a first-person reflection on that mistake and a corrected ending;
- `synthesis_anchor.txt` (section 9, cheaper): the model answers `<analysis>`, `<anchor>` (a
  verbatim quote of the whole step with the first error; y- is kept up to the quote's end) and
  `<reconstruction>` (only the reflection and the corrected ending);
- `synthesis_<mode>_before_error.txt`: the other reading, where the kept prefix ends where the
  erroneous step begins (verbatim: copied up to, not including, the error; anchor: the quote is the
  beginning of that step and y- is kept up to the quote's start).
`tapo.synthesis.template_path` replaces the built-in template by a user's own file.

Nothing here raises on model text: parsing returns the parts or one of `SynthesisFailure`'s reasons.
"""

from __future__ import annotations

import functools
import importlib.resources
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from recipe_tapo.config import PREFIX_ENDS, SYNTHESIS_MODES, TEMPLATE_PLACEHOLDERS, SynthesisConfig, check_template_file

TEMPLATE_PACKAGE = "recipe_tapo.conf"
PLACEHOLDERS = TEMPLATE_PLACEHOLDERS
_PLACEHOLDER_PATTERN = re.compile(r"\{\{(" + "|".join(PLACEHOLDERS) + r")\}\}")
# Stands for the middle of a right answer shortened to fit the prompt budget.
OMISSION_MARKER = "\n\n[... {count} tokens of this attempt omitted ...]\n\n"


class SynthesisFailure(str, Enum):
    """Why a pair gave no usable synthesis (the fixed set; values are the reported strings)."""

    PROMPT_TOO_LONG = "prompt_too_long"
    EMPTY_OUTPUT = "empty_output"
    MISSING_RECONSTRUCTION = "missing_reconstruction"
    EMPTY_RECONSTRUCTION = "empty_reconstruction"
    MISSING_ANCHOR = "missing_anchor"
    EMPTY_ANCHOR = "empty_anchor"


def load_template(config: SynthesisConfig) -> str:
    """The prompt template `config` asks for: the file `config.template_path` when set, else the
    built-in `synthesis_<mode>.txt` (prefix_end "after_error") or `synthesis_<mode>_before_error.txt`.

    Raises:
        ValueError: the mode or prefix_end is unknown, or the template file is missing, unreadable
            or lacks one of the placeholders {{question}}, {{wrong_answer}}, {{right_answer}}
            (the message names `tapo.synthesis.template_path` and the file).
    """
    return _read_template(config.mode, config.prefix_end, config.template_path)


@functools.lru_cache(maxsize=None)
def _read_template(mode: str, prefix_end: str, template_path: str | None) -> str:
    if template_path is not None:
        return check_template_file(template_path)
    if mode not in SYNTHESIS_MODES:
        raise ValueError(f"synthesis mode must be one of {list(SYNTHESIS_MODES)}, got {mode!r}")
    if prefix_end not in PREFIX_ENDS:
        raise ValueError(f"synthesis prefix_end must be one of {list(PREFIX_ENDS)}, got {prefix_end!r}")
    name = f"synthesis_{mode}.txt" if prefix_end == "after_error" else f"synthesis_{mode}_{prefix_end}.txt"
    template = importlib.resources.files(TEMPLATE_PACKAGE).joinpath("prompts", name).read_text("utf-8")
    missing = [name for name in PLACEHOLDERS if "{{" + name + "}}" not in template]
    if missing:
        raise ValueError(f"template {name} lacks the placeholders {missing}")
    return template


def render_synthesis_prompt(config: SynthesisConfig, question: str, wrong_answer: str, right_answer: str) -> str:
    """Fill the template of `config` (see `load_template`). One pass: text inserted is never scanned
    for placeholders."""
    values = {"question": question, "wrong_answer": wrong_answer, "right_answer": right_answer}
    return _PLACEHOLDER_PATTERN.sub(lambda match: values[match.group(1)], load_template(config))


@dataclass(frozen=True)
class SynthesisPrompt:
    """A synthesis request for the rollout engine, or why the pair was skipped.

    `prompt_ids` are the token ids to send (chat template and generation prompt included);
    `messages` the same prompt as a chat (one user turn), for records and SFT examples;
    `num_tokens` is `len(prompt_ids)`; `omitted_right_tokens` how many tokens were cut from the
    middle of the right answer to fit (0 = none).
    """

    prompt_ids: list[int] | None
    messages: list[dict[str, str]] | None
    num_tokens: int
    omitted_right_tokens: int
    failure: SynthesisFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


# Stands for the message content while the chat template is split around it (no template changes it).
_CONTENT_SENTINEL = "\u2063TAPO-SYNTHESIS-CONTENT\u2063"


@dataclass(frozen=True)
class PromptAnswer:
    """An answer as a synthesis prompt shows it (`SynthesisPromptBuilder.answer`).

    `body_ids`: the response's own ids up to and including its last line break (special tokens
    dropped); `tail`: the text after it, tokenised with the template text that follows the answer;
    `text`: the whole answer without special tokens (the prompt's text form).
    """

    body_ids: tuple[int, ...]
    tail: str
    text: str


# How far back from an answer's end a line break is looked for; a longer last line is re-tokenised.
_TAIL_SEARCH_TOKENS = 256


class SynthesisPromptBuilder:
    """Builds synthesis prompts as token ids from pieces, within a token budget.

    The prompt is the chat template's text before the user content, the template with its three
    values, and the chat template's text after the content (generation prompt included). The fixed
    text is tokenised once, here. An answer goes in as the rollout's own response ids (special
    tokens dropped), never re-tokenised, except its last line, which is tokenised together with the
    template text after it up to that text's first special token; the question likewise. So the
    joins a tokenizer merges (an answer's final "." with the template's next "\\n\\n") come out as
    in the whole text, and a prompt costs a few short tokenisations and list concatenation, not a
    tokenisation of tens of thousands of tokens. Where a sampled answer's ids are not the
    tokenizer's own tokenisation of its text, the prompt keeps the sampled ids; so does an answer
    that begins with whitespace, which a whole-text tokenisation might merge into the template's
    line break before it (the text is the same either way).

    Shortening policy, in order: (1) the prompt is used as is if it fits `config.max_prompt_tokens`;
    (2) otherwise the MIDDLE of the right answer is replaced by `OMISSION_MARKER`, keeping its
    beginning (the approach) and its end (the final steps and answer) in equal parts, but never below
    `config.min_right_answer_tokens`; (3) if it still cannot fit, the pair is skipped with
    `PROMPT_TOO_LONG`. The question and the wrong answer are never shortened: the model must see the
    wrong answer exactly as written, since its reconstruction or anchor is matched against it.
    No value carries a special token: special token ids are dropped from answers, and a special
    token's spelling in ordinary characters is removed from their text form and from the question.

    Args:
        tokenizer: the policy's HF tokenizer; the chat is rendered with
            `apply_chat_template(..., add_generation_prompt=True, **chat_template_kwargs)`, as the
            rollout renders prompts.
        config: the template (`mode`, `prefix_end`, `template_path`; see `load_template`) and budgets.

    Raises:
        ValueError: the chat template does not render a user turn's content verbatim.
    """

    def __init__(self, tokenizer: Any, config: SynthesisConfig, chat_template_kwargs: dict[str, Any] | None = None):
        self.tokenizer = tokenizer
        self.config = config
        self.special_ids = frozenset(int(token) for token in tokenizer.all_special_ids)
        self.special_texts = sorted(set(tokenizer.all_special_tokens), key=len, reverse=True)
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": _CONTENT_SENTINEL}],
            add_generation_prompt=True,
            tokenize=False,
            **(chat_template_kwargs or {}),
        )
        if rendered.count(_CONTENT_SENTINEL) != 1:
            raise ValueError("the tokenizer's chat template does not render a user message's content verbatim")
        chat_before, chat_after = rendered.split(_CONTENT_SENTINEL)
        parts = _PLACEHOLDER_PATTERN.split(load_template(config))
        literals = parts[0::2]
        self.slots: list[str] = parts[1::2]
        literals[0], literals[-1] = chat_before + literals[0], literals[-1] + chat_after
        self.head_ids = self._encode(literals[0], special=True)
        # After each slot: the text its value's end is tokenised with (up to the first special token), then the rest.
        self.joined_text: list[str] = []
        self.rest_ids: list[list[int]] = []
        for literal in literals[1:]:
            cut = self._first_special(literal)
            self.joined_text.append(literal[:cut])
            self.rest_ids.append(self._encode(literal[cut:], special=True))
        self.fixed_tokens = len(self.head_ids) + sum(len(ids) for ids in self.rest_ids)

    def _first_special(self, text: str) -> int:
        found = [text.find(special) for special in self.special_texts]
        return min([position for position in found if position >= 0], default=len(text))

    def _encode(self, text: str, special: bool = False) -> list[int]:
        # Value text keeps a special token's spelling as ordinary characters (it is removed first anyway).
        return list(self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=not special))

    def _decode(self, ids) -> str:
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:  # the fast path: HF's decode first walks every id in Python
            return backend.decode(list(ids), skip_special_tokens=True)
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def without_special_tokens(self, text: str) -> str:
        """`text` with every special token's spelling removed (what a value's text may show)."""
        for special in self.special_texts:
            text = text.replace(special, "")
        return text

    def answer(self, response_ids) -> PromptAnswer:
        """A response (its ids, trailing EOS stripped or not) as the prompt will show it."""
        ids = [int(token) for token in response_ids if int(token) not in self.special_ids]
        decoded = self._decode(ids)
        text = self.without_special_tokens(decoded)
        # The body ends at a line break that the next token does not extend: a token that starts with
        # a non-space character, so no tokenizer merges across the split (a line break at the very
        # end, or before more whitespace, goes into the tail and joins the template's text).
        split = 0
        following = ""
        for position in range(len(ids) - 1, max(len(ids) - _TAIL_SEARCH_TOKENS, 0) - 1, -1):
            token = self._decode(ids[position : position + 1])
            if token.endswith("\n") and following[:1].strip():
                split = position + 1
                break
            following = token
        tail = self._decode(ids[split:])
        if text != decoded or "\ufffd" in decoded or not decoded.endswith(tail):
            # A special token's spelling (its ids would spell it again), bytes that are no valid
            # text, or ids that decode apart differently: the text is tokenised instead, so the ids
            # are those of what the prompt's text form shows.
            split, tail = 0, text
        return PromptAnswer(tuple(ids[:split]), tail, text)

    def build(self, question: str, wrong: PromptAnswer, right: PromptAnswer) -> SynthesisPrompt:
        """The prompt for one pair: the question's text and two `answer` results."""
        question = self.without_special_tokens(question)
        values = {"question": ((), question, question), "wrong_answer": _parts(wrong), "right_answer": _parts(right)}
        pieces = [self._piece(index, values[slot]) for index, slot in enumerate(self.slots)]
        total = self.fixed_tokens + sum(len(piece) for piece in pieces)
        omitted = 0
        if total > self.config.max_prompt_tokens:
            slot = self.slots.index("right_answer")
            right_ids = list(right.body_ids) + self._encode(right.tail)
            marker = self._encode(OMISSION_MARKER.format(count=len(right_ids)))
            keep = len(right_ids) - (total - self.config.max_prompt_tokens) - len(marker) - 1
            if keep < max(self.config.min_right_answer_tokens, 1):
                return SynthesisPrompt(None, None, total, 0, SynthesisFailure.PROMPT_TOO_LONG)
            omitted = len(right_ids) - keep
            values["right_answer"] = self._omit_middle(right_ids, keep, omitted)
            pieces[slot] = self._piece(slot, values["right_answer"])
            total = self.fixed_tokens + sum(len(piece) for piece in pieces)
            if total > self.config.max_prompt_tokens:  # the cut changed more tokens than it saved
                return SynthesisPrompt(None, None, total, 0, SynthesisFailure.PROMPT_TOO_LONG)
        ids = list(self.head_ids)
        for piece, rest in zip(pieces, self.rest_ids):
            ids += piece
            ids += rest
        texts = {slot: value[2] for slot, value in values.items()}
        content = render_synthesis_prompt(self.config, texts["question"], texts["wrong_answer"], texts["right_answer"])
        return SynthesisPrompt(ids, [{"role": "user", "content": content}], len(ids), omitted)

    def _piece(self, index: int, value: tuple) -> list[int]:
        body_ids, tail, _ = value
        return [*body_ids, *self._encode(tail + self.joined_text[index])]

    def _omit_middle(self, ids: list[int], keep: int, omitted: int) -> tuple:
        head, tail = ids[: keep - keep // 2], ids[len(ids) - keep // 2 :] if keep // 2 else []
        # A cut inside a multi-byte character decodes to U+FFFD at the cut: drop that half character.
        head_text, tail_text = self._decode(head).rstrip("\ufffd"), self._decode(tail).lstrip("\ufffd")
        marker = OMISSION_MARKER.format(count=omitted)
        return (), head_text + marker + tail_text, head_text + marker + tail_text


def _parts(answer: PromptAnswer) -> tuple:
    return answer.body_ids, answer.tail, answer.text


def build_synthesis_prompt(
    question: str,
    wrong_answer: str,
    right_answer: str,
    tokenizer: Any,
    config: SynthesisConfig,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> SynthesisPrompt:
    """One prompt from texts, with a builder of its own (keep one `SynthesisPromptBuilder` for many:
    it tokenises the template once and takes the answers as response ids)."""
    builder = SynthesisPromptBuilder(tokenizer, config, chat_template_kwargs)

    def answer(text: str) -> PromptAnswer:
        return builder.answer(tokenizer.encode(builder.without_special_tokens(text), add_special_tokens=False))

    return builder.build(question, answer(wrong_answer), answer(right_answer))


# ---------------------------------------------------------------------------------------------
# Parsing


@dataclass(frozen=True)
class ParsedSynthesis:
    """The parts of a synthesis output. On failure the texts are empty and `failure` says why.

    `reconstruction`: verbatim mode, the whole reconstructed answer (copied prefix + correction);
    anchor mode, only the reflection and continuation. `anchor`: anchor mode only, the quoted
    step with the first error (prefix_end "after_error": the whole step; "before_error": its
    beginning). `analysis` is informative and may be empty.
    """

    mode: str
    analysis: str = ""
    anchor: str = ""
    reconstruction: str = ""
    failure: SynthesisFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


_BLOCK_TAGS = ("analysis", "anchor", "reconstruction")
_ANY_OPENING = re.compile(r"<\s*(" + "|".join(_BLOCK_TAGS) + r")\s*>", re.IGNORECASE)
_CLOSINGS = {tag: re.compile(r"<\s*/\s*" + tag + r"\s*>", re.IGNORECASE) for tag in _BLOCK_TAGS}
_CLOSED_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_FENCE_LINE = re.compile(r"^[ \t]*```[^\n]*$", re.MULTILINE)
_QUOTE_PAIRS = {'"': '"', "'": "'", "`": "`", "\u201c": "\u201d", "\u2018": "\u2019"}


def parse_synthesis_output(text: str, mode: str) -> ParsedSynthesis:
    """Extract `<analysis>`, `<anchor>` (anchor mode) and `<reconstruction>` from model output.

    Tolerates what models write: any case and inner spaces in tags (`< Reconstruction >`), text
    before, between and after blocks, a missing closing tag (the block then ends at the next
    block's opening tag or at the end of the text, which also covers truncated output), code
    fences around the output or around a block's content, and repeated blocks (the last closed,
    non-empty one wins, else the last non-empty one: a model that restarts means its last
    version). Closed `<think>...</think>` sections are ignored. Never raises on any `text`.
    """
    if mode not in SYNTHESIS_MODES:
        raise ValueError(f"synthesis mode must be one of {list(SYNTHESIS_MODES)}, got {mode!r}")
    if not text or not text.strip():
        return ParsedSynthesis(mode, failure=SynthesisFailure.EMPTY_OUTPUT)
    text = _CLOSED_THINK_BLOCK.sub("", text)
    blocks = _collect_blocks(text)

    reconstruction = _choose_block(blocks["reconstruction"])
    if reconstruction is None:
        return ParsedSynthesis(mode, failure=SynthesisFailure.MISSING_RECONSTRUCTION)
    if not reconstruction:
        return ParsedSynthesis(mode, failure=SynthesisFailure.EMPTY_RECONSTRUCTION)
    anchor = ""
    if mode == "anchor":
        anchor = _choose_block(blocks["anchor"])
        if anchor is None:
            return ParsedSynthesis(mode, failure=SynthesisFailure.MISSING_ANCHOR)
        anchor = _strip_quotes(anchor)
        if not anchor:
            return ParsedSynthesis(mode, failure=SynthesisFailure.EMPTY_ANCHOR)
    analysis = _choose_block(blocks["analysis"]) or ""
    return ParsedSynthesis(mode, analysis=analysis, anchor=anchor, reconstruction=reconstruction)


def _collect_blocks(text: str) -> dict[str, list[tuple[str, bool]]]:
    """Every block of every tag as (cleaned content, whether its closing tag was found)."""
    openings = list(_ANY_OPENING.finditer(text))
    blocks: dict[str, list[tuple[str, bool]]] = {tag: [] for tag in _BLOCK_TAGS}
    for position, opening in enumerate(openings):
        tag = opening.group(1).lower()
        limit = openings[position + 1].start() if position + 1 < len(openings) else len(text)
        closing = _CLOSINGS[tag].search(text, opening.end(), limit)
        end = closing.start() if closing else limit
        blocks[tag].append((_strip_code_fence(text[opening.end() : end].strip()), closing is not None))
    return blocks


def _choose_block(candidates: list[tuple[str, bool]]) -> str | None:
    """None when the tag never opened; "" when every block of it is empty."""
    if not candidates:
        return None
    for wanted_closed in (True, False):
        for content, closed in reversed(candidates):
            if content and closed == wanted_closed:
                return content
    return ""


def _strip_code_fence(content: str) -> str:
    """Remove a fence wrapping the whole content, or the dangling half of one around the output."""
    fences = _FENCE_LINE.findall(content)
    if not fences:
        return content
    lines = content.split("\n")
    opens_with_fence = bool(_FENCE_LINE.fullmatch(lines[0]))
    closes_with_fence = len(lines) > 1 and bool(_FENCE_LINE.fullmatch(lines[-1]))
    if len(fences) == 2 and opens_with_fence and closes_with_fence:
        lines = lines[1:-1]
    # An odd count means one fence is unmatched: it belongs to a fence around the block or around
    # the whole output (cut by a missing tag), not to code that the answer itself contains.
    elif len(fences) % 2 == 1 and opens_with_fence:
        lines = lines[1:]
    elif len(fences) % 2 == 1 and closes_with_fence:
        lines = lines[:-1]
    return "\n".join(lines).strip()


def _strip_quotes(anchor: str) -> str:
    """Models quote an anchor in quotation marks and end it with an ellipsis; neither is in y-."""
    anchor = anchor.strip()
    if len(anchor) >= 2 and _QUOTE_PAIRS.get(anchor[0]) == anchor[-1]:
        anchor = anchor[1:-1].strip()
    for ellipsis in ("...", "\u2026"):
        if anchor.endswith(ellipsis):
            anchor = anchor[: -len(ellipsis)].rstrip()
    return anchor
