"""Regression table for the math reward: (ground truth, boxed answer, verdict, why).

Pairs written for this project from the public answer conventions of MATH / MATH-500 (DeepScaleR,
DAPO-17k), AIME, HMMT and Omni-MATH: how those datasets spell answers, and the ways a wrong answer
looks almost right. Each expected verdict is the mathematically right one, not what any grader
happens to return. About half the rows must not match: ordered answers permuted, interval ends
swapped, sign flips, a missing factor, an answer list with one element too many or too few.

Left out on purpose (graders disagree, or no fix here is right for all): degrees against radians
(`30^\\circ` vs `\\frac{\\pi}{6}`), `50\\%` against `0.5`, repeating decimals (`0.\\overline{3}`),
and a choice letter boxed with its value (`\\textbf{(B) } 5` vs `B`).
"""

import pytest

from recipe_tapo.reward.math_reward import compute_score

VERDICT_TIMEOUT_S = 30.0

MATCH = [
    # MATH: fractions, radicals, pi
    ("\\frac{1}{2}", "\\dfrac{1}{2}", "dfrac"),
    ("\\frac{3}{4}", "0.75", "decimal for a fraction"),
    ("\\tfrac{5}{8}", "5/8", "tfrac and slash"),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}", "factor moved out"),
    ("2\\sqrt{5}", "\\sqrt{20}", "unsimplified radical"),
    ("\\frac{2}{\\sqrt{3}}", "\\frac{2\\sqrt{3}}{3}", "rationalised denominator"),
    ("\\frac{9\\pi}{4}", "2.25\\pi", "decimal coefficient of pi"),
    ("3\\pi", "\\pi \\cdot 3", "commuted product"),
    ("\\frac{1+\\sqrt{5}}{2}", "\\frac{1}{2}(1+\\sqrt{5})", "golden ratio, factored"),
    ("\\sqrt{2}+\\sqrt{3}", "\\sqrt{3}+\\sqrt{2}", "commuted sum"),
    # MATH: units, degrees, percent, money, words
    ("90^\\circ", "90", "degree sign dropped"),
    ("45^{\\circ}", "45^\\circ", "braced degree sign"),
    ("10\\%", "10", "percent sign dropped"),
    ("28\\%", "28 percent", "percent as a word"),
    ("28\\%", "28\\text{ percent}", "percent as a text unit"),
    ("\\$18.90", "18.90", "dollar sign dropped"),
    ("\\$5.00", "5", "trailing zero cents"),
    ("5\\text{ cm}", "5", "text unit"),
    ("12\\text{ inches}^2", "12", "squared text unit"),
    ("6 \\mbox{ hours}", "6", "mbox unit"),
    ("\\text{Monday}", "Monday", "text answer, unwrapped"),
    ("\\text{odd}", "\\textbf{Odd}", "text answer, other case and font"),
    ("\\text{(C)}", "C", "choice letter"),
    # MATH: number formats
    ("10,\\!000", "10000", "thousands separator ,\\!"),
    ("10000", "10,\\!000", "thousands separator ,\\! in the answer"),
    ("1,\\!234,\\!567", "1234567", "two ,\\! separators"),
    ("1\\,000\\,000", "10^6", "thin-space separators"),
    ("1{,}000", "1000", "braced comma separator"),
    ("0.5", ".5", "no leading zero"),
    ("-\\frac{1}{2}", "\\frac{-1}{2}", "sign inside the fraction"),
    # MATH: lists, sets, intervals
    ("-1, 3", "3, -1", "list of solutions is unordered"),
    ("\\{1, 2, 3\\}", "\\{3, 1, 2\\}", "set is unordered"),
    ("\\emptyset", "\\varnothing", "empty set glyphs"),
    ("(-\\infty, 2) \\cup (3, \\infty)", "(3,\\infty)\\cup(-\\infty,2)", "union in the other order"),
    ("[-2, 7]", "-2 \\le x \\le 7", "interval as inequalities"),
    ("x \\in [-2,7]", "-2 \\le x \\le 7", "set membership as inequalities"),
    ("(3, \\infty)", "x > 3", "ray as an inequality"),
    ("\\left[ 2, 5 \\right)", "[2,5)", "sized brackets"),
    # MATH: ordered pairs, vectors, matrices
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)", "polar point"),
    ("(2, -1)", "\\left(2,\\,-1\\right)", "point with thin space"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", "vector, other spacing"),
    ("\\begin{pmatrix} -1 & 2 \\\\ 0 & 3 \\end{pmatrix}", "\\begin{pmatrix}-1&2\\\\0&3\\end{pmatrix}", "matrix"),
    (
        "\\begin{pmatrix} \\frac{1}{2} \\\\ 0 \\\\ -3 \\end{pmatrix}",
        "\\begin{pmatrix} 0.5 \\\\ 0 \\\\ -3 \\end{pmatrix}",
        "vector with a decimal entry",
    ),
    ("\\langle 1, 2 \\rangle", "\\left\\langle 1,2\\right\\rangle", "angle-bracket vector"),
    # MATH: expressions and equations
    ("x^2+2x+1", "(x+1)^2", "factored polynomial"),
    ("5", "x = 5", "variable naming the answer"),
    ("y = 2x+3", "2x - y + 3 = 0", "same line, general form"),
    ("y = -\\frac{1}{2}x + 3", "x + 2y = 6", "same line, integer form"),
    ("\\frac{x^2}{4} + y^2 = 1", "x^2 + 4y^2 = 4", "same ellipse"),
    ("3 - 2i", "-2i + 3", "complex number, commuted"),
    # AIME: integers 0-999, often written with leading zeros
    ("33", "033", "leading zero"),
    ("7", "007", "two leading zeros"),
    ("0", "000", "zero"),
    # HMMT / Omni-MATH: closed forms
    ("2^{10}", "1024", "power evaluated"),
    ("\\binom{10}{3}", "120", "binomial evaluated"),
    ("\\frac{n(n+1)}{2}", "\\frac{n^2+n}{2}", "expanded numerator"),
    ("e^{2}", "e^2", "brace-less exponent"),
    ("\\frac{\\sqrt{6}-\\sqrt{2}}{4}", "\\frac{\\sqrt{2}(\\sqrt{3}-1)}{4}", "factored surd"),
]

NO_MATCH = [
    # ordered answers, permuted
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}", "vector permuted"),
    (
        "\\begin{pmatrix} 1 \\\\ 2 \\\\ 3 \\end{pmatrix}",
        "\\begin{pmatrix} 1 \\\\ 3 \\\\ 2 \\end{pmatrix}",
        "3-vector permuted",
    ),
    (
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        "\\begin{pmatrix} 1 & 3 \\\\ 2 & 4 \\end{pmatrix}",
        "transposed",
    ),
    (
        "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}",
        "\\begin{pmatrix} 3 & 4 \\\\ 1 & 2 \\end{pmatrix}",
        "rows swapped",
    ),
    ("(1, 2)", "(2, 1)", "pair swapped"),
    ("(1, 2, 3)", "(1, 3, 2)", "triple permuted"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\left(\\frac{\\pi}{2}, 3\\right)", "polar coordinates swapped"),
    ("(1, 2)", "2, 1", "pair answered as a bare list, wrong order"),
    ("\\langle 1, 2, 3 \\rangle", "\\langle 3, 2, 1 \\rangle", "angle-bracket vector reversed"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\\\ 3 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "entry missing"),
    # intervals
    ("[1, 2)", "(1, 2]", "ends' brackets swapped"),
    ("[1, 2)", "[1, 2]", "open end closed"),
    ("(-\\infty, 2)", "(-\\infty, 2]", "open end closed, ray"),
    ("(2, 5)", "(5, 2)", "ends swapped"),
    ("(1, 2) \\cup (3, 4)", "(1, 2) \\cup [3, 4]", "one union part closed"),
    ("x \\in [-2,7]", "-2 < x \\le 7", "inequality with an open end"),
    ("(3, \\infty)", "x \\ge 3", "ray with its end included"),
    # sign flips
    ("-5", "5", "sign flip"),
    ("\\frac{1}{2}", "-\\frac{1}{2}", "sign flip, fraction"),
    ("3 - 2i", "3 + 2i", "conjugate"),
    ("\\frac{1+\\sqrt{5}}{2}", "\\frac{1-\\sqrt{5}}{2}", "other root"),
    ("(2, -1)", "(2, 1)", "sign flip in a pair"),
    # missing or wrong factor
    ("2\\sqrt{3}", "\\sqrt{3}", "coefficient missing"),
    ("6\\pi", "6", "pi missing"),
    ("\\frac{\\pi}{4}", "\\frac{1}{4}", "pi missing from a fraction"),
    ("x^2+2x+1", "(x-1)^2", "wrong factor"),
    ("2^{10}", "2^{11}", "off by a factor 2"),
    # lists with an element too many or too few
    ("1, 2", "1, 2, 3", "one extra element"),
    ("\\{1, 2\\}", "\\{1, 2, 4\\}", "one extra set element"),
    ("-1, 3", "-1", "one element missing"),
    # numbers
    ("10,\\!000", "1000", "thousands separator, wrong magnitude"),
    ("33", "330", "AIME integer, extra digit"),
    ("\\frac{1}{3}", "0.33", "decimal too coarse"),
    ("90^\\circ", "180", "wrong angle"),
    # equations and words
    ("y = 2x+3", "y = 2x-3", "different line"),
    ("\\frac{x^2}{4} + y^2 = 1", "x^2 + y^2 = 4", "circle for an ellipse"),
    ("x = 5", "y = 5", "other variable"),
    ("\\text{Monday}", "\\text{Tuesday}", "other word"),
    ("\\text{(C)}", "D", "other choice"),
]


def _score(ground_truth, answer):
    return compute_score("math500", f"The answer is $\\boxed{{{answer}}}$.", ground_truth, timeout=VERDICT_TIMEOUT_S)


@pytest.mark.parametrize("ground_truth, answer, why", MATCH, ids=[row[2] for row in MATCH])
def test_equivalent_answer_scores_one(ground_truth, answer, why):
    result = _score(ground_truth, answer)
    assert result["score"] == 1.0 and result["acc"] is True, result


@pytest.mark.parametrize("ground_truth, answer, why", NO_MATCH, ids=[row[2] for row in NO_MATCH])
def test_different_answer_scores_zero(ground_truth, answer, why):
    result = _score(ground_truth, answer)
    assert result["score"] == 0.0 and result["acc"] is False, result


def test_table_size_and_balance():
    assert len(MATCH) + len(NO_MATCH) >= 60
    assert len(NO_MATCH) * 3 >= len(MATCH) + len(NO_MATCH)
