"""Synthesis prompts and the parsing of what the model writes back (TAPO_METHOD.md 2.3 and 9).

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
# Re-rendering after a cut can merge or split a few tokens at the joins; cut this much extra.
_JOIN_SLACK_TOKENS = 8
_MAX_SHORTENING_ATTEMPTS = 3


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

    `messages` is the chat to send (one user turn; verl's rollout reads `raw_prompt` messages);
    `num_tokens` its length with the chat template and generation prompt; `omitted_right_tokens`
    how many tokens were cut from the middle of the right answer to fit (0 = none).
    """

    messages: list[dict[str, str]] | None
    num_tokens: int
    omitted_right_tokens: int
    failure: SynthesisFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def build_synthesis_prompt(
    question: str,
    wrong_answer: str,
    right_answer: str,
    tokenizer: Any,
    config: SynthesisConfig,
    chat_template_kwargs: dict[str, Any] | None = None,
) -> SynthesisPrompt:
    """Build the synthesis chat for one pair within `config.max_prompt_tokens`, from the template
    `config` selects (`mode`, `prefix_end`, `template_path`; see `load_template`).

    Shortening policy, in order: (1) the prompt is used as is if it fits; (2) otherwise the MIDDLE
    of the right answer is replaced by `OMISSION_MARKER`, keeping its beginning (the approach) and
    its end (the final steps and answer) in equal parts, but never below
    `config.min_right_answer_tokens`; (3) if it still cannot fit, the pair is skipped with
    `PROMPT_TOO_LONG`. The question and the wrong answer are never shortened: the model must see
    the wrong answer exactly as written, since its reconstruction or anchor is matched against it.

    Args:
        tokenizer: the policy's HF tokenizer; the budget counts
            `apply_chat_template(messages, add_generation_prompt=True, **chat_template_kwargs)`,
            which must match how the rollout engine renders the chat.
    """
    kwargs = chat_template_kwargs or {}

    def measured(right_text: str) -> tuple[list[dict[str, str]], int]:
        content = render_synthesis_prompt(config, question, wrong_answer, right_text)
        messages = [{"role": "user", "content": content}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
        return messages, len(tokenizer.encode(rendered, add_special_tokens=False))

    messages, num_tokens = measured(right_answer)
    if num_tokens <= config.max_prompt_tokens:
        return SynthesisPrompt(messages, num_tokens, 0)

    right_ids = tokenizer.encode(right_answer, add_special_tokens=False)
    keep = len(right_ids) - (num_tokens - config.max_prompt_tokens) - _JOIN_SLACK_TOKENS
    for _ in range(_MAX_SHORTENING_ATTEMPTS):
        if keep < max(config.min_right_answer_tokens, 1):
            break
        omitted = len(right_ids) - keep
        messages, num_tokens = measured(_omit_middle(tokenizer, right_ids, keep, omitted))
        if num_tokens <= config.max_prompt_tokens:
            return SynthesisPrompt(messages, num_tokens, omitted)
        keep -= num_tokens - config.max_prompt_tokens + _JOIN_SLACK_TOKENS
    return SynthesisPrompt(None, num_tokens, 0, SynthesisFailure.PROMPT_TOO_LONG)


def _omit_middle(tokenizer: Any, ids: list[int], keep: int, omitted: int) -> str:
    head, tail = keep - keep // 2, keep // 2

    def decode(piece: list[int]) -> str:
        return tokenizer.decode(piece, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    # A cut inside a multi-byte character decodes to U+FFFD at the cut: drop that half character.
    head_text = decode(ids[:head]).rstrip("\ufffd")
    tail_text = decode(ids[len(ids) - tail :]).lstrip("\ufffd") if tail else ""
    return head_text + OMISSION_MARKER.format(count=omitted) + tail_text


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
