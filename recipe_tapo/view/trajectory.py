"""The parts of a constructed trajectory, for colouring: kept prefix, reflection, continuation.

A constructed trajectory is the wrong answer's own ids up to the cut (`cut_tokens`), then the
inserted text (tokenised), then EOS (`recipe_tapo.splicing`). The inserted text is split in two by
a fixed rule, since the trainer does not mark where the reflection ends:

    The reflection is the inserted text from its start through the first line break or the first
    sentence end ('.', '!' or '?' followed by whitespace or the end of the text) after its first
    non-blank character; all of it when there is neither. The corrected continuation is the rest.

So "Wait, 22 + 7 = 29, not 28.\\n29 - 7 = 22\\n..." has the reflection "Wait, 22 + 7 = 29, not 28."
(a decimal point such as "3.5" ends no sentence).

With the policy's tokenizer the trajectory's `token_ids` are decoded token by token, the cut is
exact (token `cut_tokens` starts the inserted text) and the reflection is extended to the end of
the token holding its last character, so the colours and the per-token OTS weights line up.
Without it the kept prefix in the text is estimated as the longest common prefix of the trajectory
and the wrong answer: the trained cut lies at or before that point (the splice moves it back to a
token boundary, or to the line start with `cut_at_line_boundary`), usually within a token of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

KEPT = "kept"
REFLECTION = "reflection"
CONTINUATION = "continuation"
SEGMENT_LABELS = {KEPT: "kept prefix", REFLECTION: "reflection", CONTINUATION: "corrected continuation"}
_REFLECTION_END = re.compile(r"\n|[.!?](?=\s|$)")

# A token is decoded with a few tokens before it, so that what depends on its left neighbours (e.g.
# SentencePiece's leading space) decodes as in the whole text.
_CONTEXT_TOKENS = 4
# Byte-level tokens that each hold part of one character decode to U+FFFD alone; they are merged
# into one piece (a UTF-8 character has at most 4 bytes; a few more tokens for safety).
_MAX_PIECE_TOKENS = 8

# The OTS heat scale, by log10 of the weight (OTS weights lie in [0.01, 10]): (upper bound,
# background, text colour, label). Below 1 the model found the token unlikely (suppressed); near 1
# is the model's own text; above 1 is more likely than its entropy says.
HEAT_BINS = (
    (-1.5, "#172554", "#ffffff", "< 0.03"),
    (-1.0, "#1d4ed8", "#ffffff", "0.03-0.1"),
    (-0.5, "#60a5fa", "#0b1020", "0.1-0.3"),
    (-0.25, "#93c5fd", "#0b1020", "0.3-0.56"),
    (-0.1, "#dbeafe", "#0b1020", "0.56-0.8"),
    (0.1, "transparent", "inherit", "0.8-1.25"),
    (0.25, "#ede9fe", "#0b1020", "1.25-1.8"),
    (0.5, "#c4b5fd", "#0b1020", "1.8-3.2"),
    (math.inf, "#7c3aed", "#ffffff", "> 3.2"),
)
# A weight below this counts as suppressed in the per-part statistics.
SUPPRESSED_BELOW = 0.5


def heat_bin(weight: float) -> int:
    """The index in `HEAT_BINS` of an OTS weight (a weight <= 0 falls in the lowest bin)."""
    level = math.log10(weight) if weight > 0 else -math.inf
    for index, (upper, *_rest) in enumerate(HEAT_BINS):
        if level < upper:
            return index
    return len(HEAT_BINS) - 1


def reflection_length(inserted: str) -> int:
    """Characters of the reflection at the start of `inserted` (the module docstring's rule)."""
    first = len(inserted) - len(inserted.lstrip())
    match = _REFLECTION_END.search(inserted, first)
    return match.end() if match else len(inserted)


def common_prefix_length(a: str, b: str) -> int:
    length = 0
    for left, right in zip(a, b):
        if left != right:
            break
        length += 1
    return length


@dataclass(frozen=True)
class TextSegments:
    """Character offsets in the trajectory: `[0, kept_end)` kept prefix, `[kept_end,
    reflection_end)` reflection, the rest continuation."""

    kept_end: int
    reflection_end: int

    def parts(self, text: str) -> list[tuple[str, str]]:
        """(segment, text) of each non-empty part of `text`, in order."""
        bounds = ((KEPT, 0, self.kept_end), (REFLECTION, self.kept_end, self.reflection_end),
                  (CONTINUATION, self.reflection_end, len(text)))
        return [(segment, text[start:end]) for segment, start, end in bounds if end > start]


def segments_from_text(trajectory: str, wrong: str) -> TextSegments:
    """The segments without a tokenizer: the kept prefix estimated from the text (module docstring)."""
    kept = common_prefix_length(trajectory, wrong)
    return TextSegments(kept, kept + reflection_length(trajectory[kept:]))


@dataclass(frozen=True)
class TokenPiece:
    """Decoded text of the tokens `[first, end)` (one token, or a few that share a character),
    starting at character `start` of the decoded trajectory."""

    text: str
    first: int
    end: int
    start: int


def token_pieces(ids: list[int], decode: Callable[[list[int]], str]) -> list[TokenPiece]:
    """`ids` decoded token by token; the pieces' texts concatenate to what `decode(ids)` gives for
    any tokenizer that decodes left to right (byte-level BPE, SentencePiece, character-level)."""
    pieces: list[TokenPiece] = []
    first = offset = 0
    for end in range(1, len(ids) + 1):
        context = max(0, first - _CONTEXT_TOKENS)
        before, after = decode(ids[context:first]), decode(ids[context:end])
        aligned = after.startswith(before)
        if (aligned and not after.endswith("\ufffd")) or end - first >= _MAX_PIECE_TOKENS or end == len(ids):
            text = after[len(before):] if aligned else decode(ids[first:end])
            pieces.append(TokenPiece(text, first, end, offset))
            offset += len(text)
            first = end
    return pieces


@dataclass(frozen=True)
class TokenView:
    """A trajectory's tokens with their segments; `segments` are the character offsets they give."""

    pieces: list[TokenPiece]
    piece_segments: list[str]
    segments: TextSegments


def token_view(trajectory: str, token_ids: list[int], cut_tokens: int,
               decode: Callable[[list[int]], str]) -> TokenView | str:
    """The trajectory's tokens by segment, or why the tokenizer cannot give them (it decodes
    `token_ids` to other text than the trajectory: not the run's tokenizer)."""
    pieces = token_pieces(token_ids, decode)
    decoded = "".join(piece.text for piece in pieces)
    if not decoded.startswith(trajectory):
        at = common_prefix_length(decoded, trajectory)
        return (f"the tokenizer decodes token_ids to other text than the trajectory (from character {at} on): "
                "is it the run's tokenizer?")
    kept_end = next((piece.start for piece in pieces if piece.first >= cut_tokens), len(trajectory))
    reflection_chars = kept_end + reflection_length(trajectory[kept_end:])
    segments = []
    for piece in pieces:
        if piece.first < cut_tokens:
            segments.append(KEPT)
        elif piece.start < reflection_chars:
            segments.append(REFLECTION)
        else:
            segments.append(CONTINUATION)
    reflection_end = next((piece.start for piece, segment in zip(pieces, segments) if segment == CONTINUATION),
                          len(trajectory))
    return TokenView(pieces, segments, TextSegments(kept_end, min(reflection_end, len(trajectory))))


def kept_chars_of_wrong(wrong: str, wrong_ids: list[int], cut_tokens: int,
                        decode: Callable[[list[int]], str]) -> int | None:
    """Where the cut lies in the wrong answer's text: the decoded kept ids, when they are a prefix
    of it (else None: not the run's tokenizer)."""
    kept = decode(wrong_ids[:cut_tokens])
    return len(kept) if wrong.startswith(kept) else None


@dataclass(frozen=True)
class WeightStats:
    tokens: int
    mean: float
    minimum: float
    suppressed: int  # tokens with a weight below SUPPRESSED_BELOW


def weight_stats(weights: list[float]) -> WeightStats | None:
    if not weights:
        return None
    return WeightStats(len(weights), sum(weights) / len(weights), min(weights),
                       sum(1 for weight in weights if weight < SUPPRESSED_BELOW))


def heat_runs(weights: list[float]) -> list[tuple[int, int, int]]:
    """(first token, token count, heat bin) of each run of consecutive tokens in one bin."""
    runs: list[tuple[int, int, int]] = []
    for position, weight in enumerate(weights):
        level = heat_bin(weight)
        if runs and runs[-1][2] == level:
            start, count, _ = runs[-1]
            runs[-1] = (start, count + 1, level)
        else:
            runs.append((position, 1, level))
    return runs
