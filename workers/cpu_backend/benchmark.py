"""Throughput of the hf rollout server at several concurrencies (tokens generated per second).

    python -m recipe_tapo.workers.cpu_backend.benchmark [--model DIR] [--concurrency 1 32 128]

Drives `HFGenerationServer` in-process (no Ray): at concurrency c it keeps c requests of the same
prompt in flight (each seeded, `ignore_eos`, exactly `--max-tokens` tokens) until `max(c, --min-requests)`
have been served, `--repeats` times, and prints the best and median tokens/s and the speed-up (best
over best) over the first concurrency: on a shared machine single runs swing widely. Without
`--model` it builds the tiny model (`recipe_tapo.tiny_assets`) in a temporary folder.
"""

import argparse
import asyncio
import statistics
import tempfile
import time


def build_server(model_dir: str, prompt_len: int, max_tokens: int):
    from verl.workers.config import HFModelConfig, RolloutConfig

    from recipe_tapo.workers.cpu_backend.hf_rollout import HFGenerationServer

    config = RolloutConfig(name="hf", prompt_length=prompt_len, response_length=max_tokens, temperature=1.0)
    return HFGenerationServer(config, HFModelConfig(path=model_dir), replica_rank=0)


async def run_level(server, prompt: list[int], concurrency: int, requests: int, max_tokens: int) -> tuple[int, float]:
    """Serve `requests` requests, `concurrency` at a time; returns (tokens generated, seconds)."""
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> int:
        async with slots:
            params = {"seed": index, "max_tokens": max_tokens, "ignore_eos": True, "temperature": 1.0}
            return len((await server.generate(prompt, params, request_id=f"bench-{index}")).token_ids)

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(index) for index in range(requests))))
    return tokens, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="a model folder (default: build the tiny model)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--min-requests", type=int, default=8, help="requests served at least, per concurrency")
    parser.add_argument("--repeats", type=int, default=3, help="runs per concurrency (best and median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model
        if model_dir is None:
            from recipe_tapo.tiny_assets import build_model, build_tokenizer

            model_dir = tmp
            build_model(model_dir, build_tokenizer(model_dir))
        server = build_server(model_dir, args.prompt_len, args.max_tokens)
        vocab = server.model.config.vocab_size
        prompt = [(7 * i + 3) % vocab for i in range(args.prompt_len)]
        asyncio.run(run_level(server, prompt, 2, 2, 4))  # warm-up
        print(f"model {model_dir if args.model else 'tiny (built)'}, prompt {args.prompt_len} tokens, "
              f"{args.max_tokens} new tokens per request, torch threads {torch.get_num_threads()}")
        baseline = None
        for concurrency in args.concurrency:
            requests = max(concurrency, args.min_requests)
            rates = []
            for _ in range(max(1, args.repeats)):
                tokens, seconds = asyncio.run(run_level(server, prompt, concurrency, requests, args.max_tokens))
                rates.append(tokens / seconds)
            best, median = max(rates), statistics.median(rates)
            baseline = baseline or best
            print(f"concurrency {concurrency:4d}: {requests:4d} requests x {args.max_tokens} tokens: best "
                  f"{best:8.1f} tokens/s (x{best / baseline:.1f}), median {median:8.1f} tokens/s", flush=True)


if __name__ == "__main__":
    main()
