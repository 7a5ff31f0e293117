"""Score through `compute_score` from the threads of a Ray actor, as verl's reward workers do.

Prints one JSON line: per case, the reason and the seconds the call took.
"""

import json
import time

import ray

from recipe_tapo.reward.math_reward import compute_score

# (response, ground truth, time limit). The equivalent pair gets a generous limit: it only checks
# that a call sharing the verifier processes with two runaway ones still gets its verdict, however
# busy the machine; the runaway ones must stop at their 2 s limit.
CASES = {
    "equivalent": ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", 60.0),
    "power tower": ("\\boxed{9^{9^{9^{9}}}}", "2", 2.0),
    "nested braces": ("\\boxed{" + "{" * 400 + "1" + "}" * 400 + "}", "2", 2.0),
}


@ray.remote(max_concurrency=4)
class RewardActor:
    def score(self, response, ground_truth, timeout):
        started = time.monotonic()
        result = compute_score("hmmt2025", response, ground_truth, timeout=timeout)
        return result["reason"], result["score"], time.monotonic() - started


if __name__ == "__main__":
    ray.init(num_cpus=2, include_dashboard=False)
    actor = RewardActor.remote()
    ray.get(actor.score.remote("\\boxed{1}", "1", 2.0))  # the first call may wait for the verifier to start
    # All at once: the calls run in the actor's threads, where a SIGALRM time limit could not work.
    futures = {name: actor.score.remote(*case) for name, case in CASES.items()}
    print(json.dumps({name: ray.get(future) for name, future in futures.items()}))
    ray.shutdown()
