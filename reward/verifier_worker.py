"""The verifier process: math-verify equivalence checks, one JSON request per line on stdin.

Started by `recipe_tapo.reward.verifier` as a plain script (`python verifier_worker.py`), never
through `multiprocessing`, so it does not re-import the caller's `__main__` and works under any
caller (a script without a main guard, a thread, a Ray actor). Depends on the standard library and
math-verify only.

Protocol, one JSON object per line:
    -> {"ready": true, "pid": <int>}                 once, after math-verify is imported and warm
    <- {"gold": <str>, "pred": <str>, "seconds": <float>}
    -> {"equal": <bool>} | {"timeout": true} | {"error": <str>, "fatal": <bool>}

`seconds` arms a SIGALRM timer (this is the process's main thread, so signals work) that
interrupts sympy between bytecodes; the caller kills the process if even that does not answer in
time (a long C-level computation holds the interpreter).
"""

import argparse
import json
import os
import resource
import signal
import sys

# Running as a script puts this file's folder first on sys.path; its sibling modules must not
# shadow anything math-verify imports.
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]


WARM_UP_PAIRS = [
    ("\\frac{\\sqrt{2}}{2}", "\\sqrt{2}/2"),
    ("x^2+2x+1", "(x+1)^2"),
    ("(0,1]", "[0,1]"),
    ("\\{1,2\\}", "\\{2,1\\}"),
    ("\\frac{1}{3}", "0.333"),
    ("x \\in [-2,7]", "-2 \\le x \\le 7"),
    ("y = 2x+3", "2x - y + 3 = 0"),
]


class _Deadline(BaseException):
    """Raised by the alarm. A BaseException, because math-verify catches `Exception` internally
    and would carry on with the next candidate."""


def _raise_deadline(signum, frame):
    raise _Deadline


def _equivalent(gold: str, pred: str) -> bool:
    from math_verify import LatexExtractionConfig, parse, verify

    # Timeouts off: math-verify's own alarm would cancel ours with `signal.alarm(0)`.
    # allow_set_relation_comp: a relation answered for a set compares as the set it describes
    # (`-2 \le x \le 7` for `x \in [-2, 7]` or `[-2, 7]`); math-verify's default allows only the
    # other direction.
    config = [LatexExtractionConfig()]
    parsed_gold = parse("\\boxed{" + gold + "}", config, parsing_timeout=None)
    parsed_pred = parse("\\boxed{" + pred + "}", config, parsing_timeout=None)
    if not parsed_gold or not parsed_pred:
        return False
    return bool(verify(parsed_gold, parsed_pred, allow_set_relation_comp=True, timeout_seconds=None))


def _answer(request: dict) -> dict:
    try:
        try:
            signal.setitimer(signal.ITIMER_REAL, max(float(request["seconds"]), 0.001))
            return {"equal": _equivalent(request["gold"], request["pred"])}
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        return {"timeout": True}
    except MemoryError:
        # sympy's caches may be half-updated: ask to be replaced.
        return {"error": "MemoryError", "fatal": True}
    except Exception as error:  # math-verify/sympy raise many types on malformed LaTeX
        return {"error": f"{type(error).__name__}: {error}"[:300], "fatal": False}


def _send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space limit; 0 = none")
    args = parser.parse_args()
    if args.memory_mb > 0:
        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    import logging

    # math-verify warns on every call that its timeouts are off; the alarm above replaces them.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    signal.signal(signal.SIGALRM, _raise_deadline)
    # sympy imports most of itself lazily: the first fraction, polynomial or interval would cost
    # a second of a request's time limit. Pay it here, before announcing readiness.
    for gold, pred in WARM_UP_PAIRS:
        _equivalent(gold, pred)
    _send({"ready": True, "pid": os.getpid()})
    for line in sys.stdin:
        _send(_answer(json.loads(line)))


if __name__ == "__main__":
    main()
