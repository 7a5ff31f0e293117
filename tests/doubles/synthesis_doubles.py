"""Synthesis text sources for end-to-end tests (`tapo.synthesis.text_source`).

A random tiny model never writes a parsable synthesis, so these stand in for the synthesis text
only; selection, prompts, parsing, splicing, scoring, advantages and the update stay the real path.
They run inside the trainer's Ray process, which finds this folder through PYTHONPATH.
"""

import asyncio

from recipe_tapo.workers.synthesis_plan import GeneratedText


class HalfThenRight:
    """Well-formed output from its inputs: the first third of the wrong answer, a short
    reflection, then the end of the right answer (short enough to fit the tiny run's responses)."""

    def __init__(self, config, tokenizer):
        self.mode = str(config.tapo.synthesis.mode)

    def __call__(self, requests, timeout_s):
        return [GeneratedText(self.write(request), num_tokens=len(request.wrong) // 2 + 8) for request in requests]

    def write(self, request):
        kept = request.wrong[: max(1, len(request.wrong) // 3)]
        reflection = " wait,"
        ending = request.right[-max(1, len(request.right) // 4) :]
        if self.mode == "anchor":
            return f"<analysis>x</analysis><anchor>{kept.split()[-1] if kept.split() else kept}</anchor>" \
                   f"<reconstruction>{reflection}{ending}</reconstruction>"
        return f"<analysis>the second half is wrong</analysis><reconstruction>{kept}{reflection}{ending}</reconstruction>"


class FailsOnFirstRound(HalfThenRight):
    """Raises for every request of the first step it sees (a fault injected into that step's
    round, whether it comes as one batch or group by group), then writes like HalfThenRight."""

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.failing_step = None

    def __call__(self, requests, timeout_s):
        if self.failing_step is None:
            self.failing_step = requests[0].step
        if any(request.step == self.failing_step for request in requests):
            raise ConnectionError("injected fault: the synthesis round failed")
        return super().__call__(requests, timeout_s)


class SlowForHalf(HalfThenRight):
    """A per-request (async) source like the rollout servers' client: every second request
    answers at once, the others never within a test's deadline (a stalled server)."""

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.requests = 0

    async def generate(self, request):
        self.requests += 1
        if self.requests % 2 == 0:
            await asyncio.sleep(3600)
        return GeneratedText(self.write(request), num_tokens=len(request.wrong) // 2 + 8)


class AlwaysFails(HalfThenRight):
    """Every round raises: a synthesis path that never works (the run must stop, not turn into GRPO)."""

    def __call__(self, requests, timeout_s):
        raise ConnectionError("injected fault: the synthesis server is unreachable")
