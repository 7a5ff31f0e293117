"""Final-answer extraction and normalisation: pure string work, linear in the input length.

Everything here runs in the calling process with no time limit of its own, so every function is a
single pass or a regular expression without nested quantifiers: a 100k-character response costs
milliseconds. The expensive, possibly non-terminating part (sympy through math-verify) lives in
`recipe_tapo.reward.verifier`, behind a hard deadline.
"""

import re
from fractions import Fraction

# `\boxed{...}`, `\boxed {...}` and `\fbox{...}` open a braced answer; `\boxed 5` is LaTeX's
# brace-less form (one token up to the next space or dollar).
_BOXED_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOXED_BARE = re.compile(r"\\boxed[ \t]+([^\s${}]+)")
# A brace preceded by a backslash is a literal brace (`\{1, 2\}`), not a group delimiter.
_BRACE = re.compile(r"\\[{}]|[{}]")


def to_text(value) -> str:
    """Any response or answer as a str that encodes to UTF-8.

    Bytes are decoded with replacement characters; lone surrogates (text decoded with
    `surrogateescape`, or cut in the middle of a pair) become '?'; other objects (a ground truth
    stored as an int) go through `str`.
    """
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    text = value if isinstance(value, str) else str(value)
    return text.encode("utf-8", errors="replace").decode("utf-8")


def _matching_braces(text: str) -> dict[int, int]:
    """Position of every group-opening `{` mapped to the position of its closing `}`."""
    closing_of = {}
    open_positions = []
    for match in _BRACE.finditer(text):
        token = match.group()
        if token == "{":
            open_positions.append(match.start())
        elif token == "}" and open_positions:
            closing_of[open_positions.pop()] = match.start()
    return closing_of


def last_boxed_answer(text: str) -> str | None:
    """Content of the last complete `\\boxed{}` / `\\fbox{}` / `\\boxed x` in `text`, or None.

    Braces nest (`\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`). A `\\boxed{` that is never closed (a
    response cut at the length limit) is passed over in favour of the last complete one. Nested
    boxes resolve to the innermost, which is also the last one opened.
    """
    closing_of = _matching_braces(text)
    # (start of the command, start of the answer, end of the answer); sliced only for the winner,
    # since thousands of nested boxes would otherwise copy the text thousands of times.
    spans = [
        (match.start(), match.end(), closing_of[match.end() - 1])
        for match in _BOXED_OPEN.finditer(text)
        if match.end() - 1 in closing_of
    ]
    spans += [(match.start(), match.start(1), match.end(1)) for match in _BOXED_BARE.finditer(text)]
    if not spans:
        return None
    _, answer_start, answer_end = max(spans)
    return text[answer_start:answer_end].strip()


# Normalisation, applied identically to the prediction and the ground truth. Order matters: wrappers
# and spacing first, then units, then number formats.
# Spacing commands. A row break `\\` is matched first and kept whole, so that the second backslash
# of a break followed by a space (`1 \\ 2`) is not taken for a control space `\ `: that merged
# the rows of a vector or matrix into one entry. `\!` (negative thin space, as in MATH's
# `10,\!000`) is removed; the other spacing commands become a space.
_SPACING_COMMANDS = re.compile(r"(\\\\)|(\\!)|\\[,:; ]|\\q?quad(?![a-zA-Z])|~")
_SIZE_COMMANDS = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])|\\displaystyle(?![a-zA-Z])")
_FRAC_VARIANTS = re.compile(r"\\[dt]frac(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z])")
_PERCENT = re.compile(r"\\?%")
# Vectors written with angle brackets are tuples; `\varnothing` is another glyph for `\emptyset`.
_ANGLE_BRACKETS = re.compile(r"\\(?:langle|rangle)(?![a-zA-Z])")
_VARNOTHING = re.compile(r"\\varnothing(?![a-zA-Z])")
_TEXT_COMMAND = r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*"
# A text group closing the answer right after a number-like value is a unit: `10\text{ cm}`,
# `\frac{1}{2}\text{ inches}^2`. The value must end in a digit, `}` or `)` so that a bare
# `\text{Evelyn}` is kept.
_TRAILING_TEXT_UNIT = re.compile(r"(?<=[\d})])\s*" + _TEXT_COMMAND + r"\{[^{}]*\}(?:\^\{?\d\}?)?$")
_TEXT_WRAPPER = re.compile(_TEXT_COMMAND + r"\{([^{}]*)\}")
# Bare unit words after a plain number. Deliberately a closed list: `5x` must stay `5x`.
# Single letters (m, g) and "in" are left out: after a number they are as likely variables.
_UNIT_WORDS = (
    "units?|square units|sq units|cm|centimeters?|mm|millimeters?|meters?|km|kilometers?|inch|inches|"
    "ft|feet|foot|yards?|miles?|mph|degrees?|radians?|seconds?|minutes?|hours?|days?|weeks?|years?|"
    "dollars?|cents?|pounds?|kg|grams?|liters?|ml|people|students|ways|percent|per cent"
)
_TRAILING_UNIT_WORD = re.compile(r"(?<=\d)\s+(?:" + _UNIT_WORDS + r")(?:\^\{?\d\}?)?$")
_DOLLAR_SIGN = re.compile(r"\\\$|\$")
# `x = 5`: a variable naming the answer, stripped only when nothing after it is another equation
# (`x = 1, y = 2` is kept) and only where the ground truth is not itself an equation (the caller
# decides: `y = 2x + 3` against `2x - y + 3 = 0` is a comparison of equations, left to math-verify).
_SINGLE_VARIABLE_EQUALS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=[^=]*$)(?=\S)")
# Digit groups separated by `,`, `{,}` or a space (what `\,`, `\ ` and `~` became above).
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:(?:,|\{,\}| )\d{3})+(?:\.\d+)?$")
_THOUSANDS_SEPARATOR = re.compile(r"\{,\}|[, ]")
_SQRT_SHORTHAND = re.compile(r"\\sqrt\s*(\d|[a-zA-Z](?![a-zA-Z]))")
_FRAC_SHORTHAND = re.compile(r"\\frac\s*(\d)\s*(\d)")
_CHOICE_LETTER = re.compile(r"^\(([A-Ea-e])\)$")
_WHITESPACE = re.compile(r"\s+")


def _respace(match: re.Match) -> str:
    if match.group(1):
        return match.group(1)  # a row break, kept
    return "" if match.group(2) else " "


def is_equation(normalized_ground_truth: str) -> bool:
    """Whether the ground truth is an equation (`y = 2x + 3`, `x = 5`); if so, a leading `x =` of the
    answer is part of the answer, not a name for it."""
    return "=" in normalized_ground_truth


def normalize_answer(answer: str, strip_variable: bool = True) -> str:
    """A canonical spelling of a final answer; spacing is collapsed, not removed.

    Spaces are kept because LaTeX needs some of them (`\\pi r` is not `\\pir`); `comparison_key`
    removes them for the exact-match comparison only. `strip_variable` removes a leading `x =`
    (pass `not is_equation(ground_truth)`; a ground truth that is an equation is normalised with
    False, and has nothing to strip anyway).

    Nothing here reorders, merges or drops entries: a row break `\\\\` and every separator of a
    tuple, vector, matrix or interval survive, so ordered answers stay ordered.
    """
    text = answer.strip()
    text = _SPACING_COMMANDS.sub(_respace, text)
    text = _SIZE_COMMANDS.sub("", text)
    text = _ANGLE_BRACKETS.sub(lambda match: "(" if match.group() == "\\langle" else ")", text)
    text = _VARNOTHING.sub(r"\\emptyset", text)
    text = _FRAC_VARIANTS.sub(r"\\frac", text)
    text = _DEGREES.sub("", text)
    text = _PERCENT.sub("", text)
    text = _DOLLAR_SIGN.sub("", text)
    text = _TRAILING_TEXT_UNIT.sub("", text.strip())
    text = _TEXT_WRAPPER.sub(r"\1", text)
    text = _WHITESPACE.sub(" ", text).strip()
    text = _TRAILING_UNIT_WORD.sub("", text)
    text = text.rstrip(". ").strip()
    if strip_variable:
        text = _SINGLE_VARIABLE_EQUALS.sub("", text)
    if _THOUSANDS.match(text):
        text = _THOUSANDS_SEPARATOR.sub("", text)
    text = _SQRT_SHORTHAND.sub(r"\\sqrt{\1}", text)
    text = _FRAC_SHORTHAND.sub(r"\\frac{\1}{\2}", text)
    choice = _CHOICE_LETTER.match(text)
    if choice:
        text = choice.group(1).upper()
    return text


def comparison_key(normalized: str) -> str:
    """`normalized` without any whitespace: two answers with equal keys are the same answer."""
    return _WHITESPACE.sub("", normalized)


# Plain rationals small enough to compare exactly in-process. The digit bound keeps `int()` far
# below Python's 4300-digit conversion limit and the comparison instant.
_INTEGER = re.compile(r"^[+-]?\d{1,60}$")
_DECIMAL = re.compile(r"^[+-]?(?:\d{1,60})?\.\d{1,60}$")
_SLASH_FRACTION = re.compile(r"^([+-]?\d{1,60})/(\d{1,60})$")
_LATEX_FRACTION = re.compile(r"^([+-]?)\\frac\{([+-]?\d{1,60})\}\{(\d{1,60})\}$")


def as_rational(key: str) -> tuple[Fraction, bool] | None:
    """(value, written_as_integer_or_fraction) for a plain number key, else None.

    The flag is False for decimals: math-verify accepts a rounded decimal for a fraction
    (0.333333 for 1/3), so only integer-or-fraction spellings may be declared unequal in-process.
    """
    if _INTEGER.match(key):
        return Fraction(int(key)), True
    if _DECIMAL.match(key):
        return Fraction(key), False
    slash = _SLASH_FRACTION.match(key)
    if slash:
        numerator, denominator = int(slash.group(1)), int(slash.group(2))
        return (Fraction(numerator, denominator), True) if denominator else None
    latex = _LATEX_FRACTION.match(key)
    if latex:
        sign = -1 if latex.group(1) == "-" else 1
        numerator, denominator = int(latex.group(2)), int(latex.group(3))
        return (Fraction(sign * numerator, denominator), True) if denominator else None
    return None


_TEXT_ANSWER = re.compile(r"^[A-Za-z]{2,}(?: [A-Za-z]+)*$")


def is_text_answer(normalized_ground_truth: str) -> bool:
    """Whether the ground truth is words ("Evelyn", "\\text{odd}") rather than mathematics.

    Words must be compared as words: read as LaTeX, "Evelyn" is the product E*v*e*l*y*n, which
    sympy finds equal to "nylevE". A single letter stays mathematics (a variable or a choice); the
    price is that a two-letter product such as "xy" is compared as a word too.
    """
    return bool(_TEXT_ANSWER.match(normalized_ground_truth))


def text_key(normalized: str) -> str:
    """Case- and spacing-insensitive form of a text answer."""
    return _WHITESPACE.sub(" ", normalized).strip().casefold()
