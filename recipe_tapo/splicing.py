"""Assembly of a constructed trajectory from a wrong answer and a parsed synthesis (docs/method.md, section 4).

The model's reproduction of the wrong answer y- can drift, so it is not trusted: the trained
response is y-'s OWN token ids up to the cut, then the tokenised rest of the reconstruction, then
EOS. The cut is where the reconstruction departs from y- (longest common prefix after whitespace
normalisation), moved back to a token boundary of y-'s ids (optionally first to a line start).
In anchor mode the model quotes the step with y-'s first error instead of re-emitting the prefix;
with `prefix_end="after_error"` (the default) y- is kept up to the END of the quote, so the
trajectory reads: own reasoning, own mistake, reflection on it, corrected reasoning; with
"before_error" it is kept up to the quote's start. With `full_reconstruction` (the paper's ablation)
none of y-'s ids are kept: the response is the whole reconstruction, tokenised.

Works with any HF tokenizer: a token boundary is found by decoding y-'s ids, and accepted only
where `decode(wrong_ids[:cut_tokens]) == wrong_text[:cut_chars]` holds exactly, which also covers
byte-level BPE tokens that split a multi-byte character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

from recipe_tapo.config import PREFIX_ENDS, SplicingConfig
from recipe_tapo.synthesis import ParsedSynthesis

# How many tokens the cut may step back past a token that does not end on a character of y-
# (a byte-level token holding part of a character; a character takes at most 4 bytes).
_MAX_BOUNDARY_BACKTRACK = 8


class SpliceFailure(str, Enum):
    """Why a parsed synthesis gave no trajectory (the fixed set; values are the reported strings)."""

    ANCHOR_NOT_FOUND = "anchor_not_found"
    ANCHOR_AMBIGUOUS = "anchor_ambiguous"
    NO_DEPARTURE = "no_departure"
    DEPARTURE_INSIDE_LINE = "departure_inside_line"
    NO_FINAL_ANSWER = "no_final_answer"
    NO_TOKEN_BOUNDARY = "no_token_boundary"
    PREFIX_TOO_SHORT = "prefix_too_short"
    SPECIAL_TOKEN_IN_TEXT = "special_token_in_text"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class SplicedTrajectory:
    """A constructed response, or why there is none.

    On success: `token_ids` = `wrong_ids[:cut_tokens]` + ids of `appended_text` + [EOS], the
    response to train; `text` = `wrong_text[:cut_chars] + appended_text` (EOS not included);
    `prefix_fraction` = cut_tokens / len(wrong_ids). On failure `failure` is set and the fields
    computed before the failing check keep their values (the rest are empty), for inspection.
    """

    failure: SpliceFailure | None = None
    token_ids: tuple[int, ...] = ()
    text: str = ""
    appended_text: str = ""
    cut_chars: int = 0
    cut_tokens: int = 0
    prefix_fraction: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None


def find_departure(wrong: str, reconstruction: str) -> tuple[int, int]:
    """Where `reconstruction` stops reproducing `wrong`, whitespace runs counting as equal.

    Returns:
        (i, j) with wrong[:i] and reconstruction[:j] equal after whitespace normalisation, and
        wrong[:i] + reconstruction[j:] the reconstruction continued from y-'s own text. When the
        reconstruction never departs (it is a prefix of `wrong`), reconstruction[j:] is blank.
    """
    wrong_words, recon_words = wrong.split(), reconstruction.split()
    common = _common_prefix_length(wrong_words, recon_words)
    if common == len(recon_words):
        return _word_end(wrong, wrong_words, common - 1), len(reconstruction)
    if common == len(wrong_words):
        # y- ends and the reconstruction goes on: keep the reconstruction's whitespace at the join.
        return _word_end(wrong, wrong_words, common - 1), _word_end(reconstruction, recon_words, common - 1)
    wrong_word, recon_word = wrong_words[common], recon_words[common]
    same_chars = _common_prefix_length(wrong_word, recon_word)
    return _word_start(wrong, common) + same_chars, _word_start(reconstruction, common) + same_chars


def departs_inside_line(wrong: str, departure: int) -> bool:
    """Whether `departure` (an offset in `wrong`, as `find_departure` gives) lies inside a line of
    `wrong`: after some non-blank text of its line and before the end of `wrong`'s text. A departure
    at a line's start (after its indentation) or after all of `wrong` is not."""
    line_start = wrong.rfind("\n", 0, departure) + 1
    return bool(wrong[line_start:departure].strip()) and bool(wrong[departure:].strip())


@dataclass(frozen=True)
class AnchorMatch:
    """Where a quote lies in y-: `wrong[start:end]` is the quote (whitespace runs may differ), or
    `failure` says why there is no single place (ANCHOR_NOT_FOUND or ANCHOR_AMBIGUOUS)."""

    start: int = 0
    end: int = 0
    failure: SpliceFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def locate_anchor(wrong: str, anchor: str) -> AnchorMatch:
    """The one place in `wrong` that `anchor` quotes, whitespace runs counting as equal.

    The quote must lie at word boundaries: when it begins with a word character (`\\w`), the
    character before it in `wrong` must not be one, and likewise after its end; so "8 = 336" does
    not match inside "48 = 336". It must also occur exactly once (overlapping occurrences count):
    a quote found twice gives ANCHOR_AMBIGUOUS rather than a guess, a quote found nowhere (or blank)
    ANCHOR_NOT_FOUND.
    """
    words = anchor.split()
    if not words:
        return AnchorMatch(failure=SpliceFailure.ANCHOR_NOT_FOUND)
    pattern = r"\s+".join(re.escape(word) for word in words)
    if re.match(r"\w", words[0][0]):
        pattern = r"(?<!\w)" + pattern
    if re.match(r"\w", words[-1][-1]):
        pattern += r"(?!\w)"
    compiled = re.compile(pattern)
    first = compiled.search(wrong)
    if first is None:
        return AnchorMatch(failure=SpliceFailure.ANCHOR_NOT_FOUND)
    if compiled.search(wrong, first.start() + 1) is not None:
        return AnchorMatch(first.start(), first.end(), SpliceFailure.ANCHOR_AMBIGUOUS)
    return AnchorMatch(first.start(), first.end())


def splice_trajectory(
    wrong_text: str,
    wrong_ids: list[int],
    parsed: ParsedSynthesis,
    tokenizer: Any,
    config: SplicingConfig,
    eos_token_id: int | None = None,
    prefix_end: str = "after_error",
) -> SplicedTrajectory:
    """Build the trained response from y- and a successfully parsed synthesis output.

    Args:
        wrong_text: y- as text; for a rollout row `tokenizer.decode(wrong_ids)` with special tokens
            kept (the cut can only fall where the decoded ids are exactly a prefix of this text).
        wrong_ids: y-'s own token ids, without padding and without EOS; for offline data
            `tokenizer.encode(wrong_text, add_special_tokens=False)`.
        parsed: `parse_synthesis_output`'s result with `ok` true.
        config: cut and rejection settings; `config.max_response_length` (None = no limit) must be
            resolved by the caller to the rollout's response length.
        eos_token_id: the id that ends a rollout; default `tokenizer.eos_token_id`.
        prefix_end: `tapo.synthesis.prefix_end`, the reading the synthesis prompt asked for; it
            matters in anchor mode only: "after_error" keeps y- up to the END of the quoted step
            (and the whitespace y- wrote after it), "before_error" up to its start. In verbatim
            mode the model's own copy says where the kept prefix ends.

    Rejections (`SplicedTrajectory.failure`): the anchor is not in y- at word boundaries, or is
    there more than once (anchor mode); the reconstruction never departs from y- (nothing was
    corrected); the departure falls inside one of y-'s lines (with
    `config.reject_inside_line_departure` and prefix_end "after_error": the copy rewrote the line
    instead of keeping the mistake); the corrected continuation
    (the text after the departure, not y-'s own text) lacks
    `config.final_answer_marker`; no token boundary decodes to a prefix of y-; the kept prefix is
    below `config.min_prefix_tokens` or `config.min_prefix_fraction`; the appended text tokenises
    to a special token (e.g. a literal EOS); the response with EOS is longer than
    `config.max_response_length`.

    With `config.full_reconstruction` (verbatim mode only) the response is the whole
    reconstruction, tokenised, + EOS: cut_chars = cut_tokens = 0 and the min-prefix checks do not
    apply; the other rejections do (the marker is looked for in the whole reconstruction).
    """
    if not parsed.ok:
        raise ValueError(f"splice_trajectory needs a parsed synthesis, got failure {parsed.failure}")
    if prefix_end not in PREFIX_ENDS:
        raise ValueError(f"prefix_end must be one of {list(PREFIX_ENDS)}, got {prefix_end!r}")
    if config.full_reconstruction and parsed.mode == "anchor":
        raise ValueError("full_reconstruction needs a verbatim synthesis: anchor output is only the correction")
    eos = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; pass eos_token_id")

    reconstruction = parsed.reconstruction
    if parsed.mode == "anchor":
        match = locate_anchor(wrong_text, parsed.anchor)
        if not match.ok:
            return SplicedTrajectory(match.failure)
        if prefix_end == "before_error":
            reconstruction = wrong_text[: match.start] + reconstruction
        else:
            # Keep the quoted step and the whitespace y- wrote after it; the (stripped) reflection
            # then follows as y- would have gone on. No whitespace there: a space joins them.
            kept_end = match.end + len(wrong_text[match.end :]) - len(wrong_text[match.end :].lstrip())
            joint = "" if kept_end > match.end else " "
            reconstruction = wrong_text[:kept_end] + joint + reconstruction

    departure, recon_departure = find_departure(wrong_text, reconstruction)
    continuation = reconstruction[recon_departure:]
    if not continuation.strip():
        return SplicedTrajectory(SpliceFailure.NO_DEPARTURE)
    # Under "before_error" the wrong step is not kept: rewriting it inside its line is the intended form.
    if config.reject_inside_line_departure and prefix_end == "after_error" and departs_inside_line(wrong_text, departure):
        return SplicedTrajectory(SpliceFailure.DEPARTURE_INSIDE_LINE)
    if config.full_reconstruction:
        return _full_reconstruction(reconstruction, tokenizer, config, eos)
    # The correction must give its own final answer: a marker y- already wrote does not count.
    if config.final_answer_marker not in continuation:
        return SplicedTrajectory(SpliceFailure.NO_FINAL_ANSWER)

    line_start = wrong_text.rfind("\n", 0, departure) + 1
    cut_target = line_start if config.cut_at_line_boundary else departure
    boundary = _token_boundary_at_or_before(tokenizer, wrong_ids, wrong_text, cut_target)
    if boundary is None:
        return SplicedTrajectory(SpliceFailure.NO_TOKEN_BOUNDARY)
    cut_tokens, cut_chars = boundary
    appended_text = wrong_text[cut_chars:departure] + continuation
    prefix_fraction = cut_tokens / len(wrong_ids) if wrong_ids else 0.0
    text = wrong_text[:cut_chars] + appended_text
    partial = dict(
        text=text,
        appended_text=appended_text,
        cut_chars=cut_chars,
        cut_tokens=cut_tokens,
        prefix_fraction=prefix_fraction,
    )
    if cut_tokens < config.min_prefix_tokens or prefix_fraction < config.min_prefix_fraction:
        return SplicedTrajectory(SpliceFailure.PREFIX_TOO_SHORT, **partial)
    return _finish(tokenizer, config, eos, wrong_ids[:cut_tokens], partial)


def _full_reconstruction(reconstruction: str, tokenizer: Any, config: SplicingConfig, eos: int) -> SplicedTrajectory:
    if config.final_answer_marker not in reconstruction:
        return SplicedTrajectory(SpliceFailure.NO_FINAL_ANSWER)
    partial = dict(text=reconstruction, appended_text=reconstruction, cut_chars=0, cut_tokens=0, prefix_fraction=0.0)
    return _finish(tokenizer, config, eos, [], partial)


def _finish(tokenizer: Any, config: SplicingConfig, eos: int, kept_ids: list[int], partial: dict) -> SplicedTrajectory:
    appended_ids = tokenizer.encode(partial["appended_text"], add_special_tokens=False)
    if not set(appended_ids).isdisjoint(tokenizer.all_special_ids):
        return SplicedTrajectory(SpliceFailure.SPECIAL_TOKEN_IN_TEXT, **partial)
    token_ids = (*kept_ids, *appended_ids, eos)
    if config.max_response_length is not None and len(token_ids) > config.max_response_length:
        return SplicedTrajectory(SpliceFailure.TOO_LONG, token_ids=token_ids, **partial)
    return SplicedTrajectory(None, token_ids=token_ids, **partial)


def _common_prefix_length(a: list[str] | str, b: list[str] | str) -> int:
    """Length of the longest common prefix, by bisection on slice equality (compared in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _word_start(text: str, word_index: int) -> int:
    """Offset in `text` of its `word_index`-th whitespace-separated word (as in `str.split()`)."""
    # `\s` and str.split() share Python's definition of whitespace, so the counts agree.
    return re.match(r"\s*(?:\S+\s+){%d}" % word_index, text).end()


def _word_end(text: str, words: list[str], word_index: int) -> int:
    """Offset just past word `word_index` (-1: before the first word, i.e. 0)."""
    if word_index < 0:
        return 0
    return _word_start(text, word_index) + len(words[word_index])


def _token_boundary_at_or_before(tokenizer: Any, ids: list[int], text: str, max_chars: int) -> tuple[int, int] | None:
    """The largest (cut_tokens, cut_chars) with decode(ids[:cut_tokens]) == text[:cut_chars] and
    cut_chars <= max_chars, or None when no such boundary is found near max_chars.

    Decoding is the one operation every HF tokenizer offers, and it is cheap next to encoding.
    Decoded length grows with the token count, so a bisection finds the last count that decodes to
    at most `max_chars` characters; a guess from the average characters per token brackets it first,
    which keeps the number of decodes low. Then the cut steps back past tokens that end inside a
    character (byte-level BPE) until the decoded text is exactly a prefix of `text`.
    """
    decode = _raw_decoder(tokenizer)
    decoded: dict[int, str] = {}

    def decode_prefix(count: int) -> str:
        if count not in decoded:
            decoded[count] = decode(ids[:count])
        return decoded[count]

    def fits(count: int) -> bool:
        return len(decode_prefix(count)) <= max_chars

    low, high = _bracket(fits, guess=max_chars * len(ids) // max(len(text), 1), upper=len(ids))
    while high - low > 1:
        middle = (low + high) // 2
        if fits(middle):
            low = middle
        else:
            high = middle
    for count in range(low, max(low - _MAX_BOUNDARY_BACKTRACK, 0) - 1, -1):
        prefix = decode_prefix(count)
        if len(prefix) <= max_chars and text.startswith(prefix):
            return count, len(prefix)
    return None


def _raw_decoder(tokenizer: Any) -> Any:
    """ids -> text exactly as `tokenizer.decode(ids, skip_special_tokens=False,
    clean_up_tokenization_spaces=False)`; for a fast tokenizer, its Rust decoder called directly,
    which skips transformers' Python layer (half the cost of the call in transformers 5.10)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return lambda ids: backend.decode(ids, skip_special_tokens=False)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _bracket(fits: Any, guess: int, upper: int) -> tuple[int, int]:
    """(low, high) with fits(low) and low < high, high == upper + 1 or not fits(high).

    `fits(0)` must hold (nothing decodes to nothing); steps double away from the guess.
    """
    guess = min(max(guess, 0), upper)
    step = 16
    if fits(guess):
        low = guess
        while low < upper:
            high = min(low + step, upper)
            if not fits(high):
                return low, high
            low, step = high, step * 2
        return upper, upper + 1
    high = guess
    while True:
        low = max(high - step, 0)
        if low == 0 or fits(low):
            return low, high
        high, step = low, step * 2
