"""Output tok/s of N concurrent JSON-schema requests against N unconstrained ones, on one server.

    python -m bench.scenarios.grammar_speed --url http://127.0.0.1:8080 [--concurrency 8] [--max-tokens 96]

Both runs use the same prompts, greedy or seeded sampling, and the same max_tokens; the
unconstrained run sets ignore_eos so it generates as many tokens as the schema's runs. Works
against llama-server too (it takes the same ``json_schema`` field).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import time

import httpx

SCHEMA = {
    "type": "object",
    "properties": {
        "people": {
            "type": "array",
            "minItems": 8,
            "maxItems": 8,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 16},
                    "age": {"type": "integer", "minimum": 0, "maximum": 120},
                    "city": {"type": "string", "maxLength": 16},
                },
                "required": ["name", "age", "city"],
            },
        }
    },
    "required": ["people"],
}


def run(url: str, concurrency: int, max_tokens: int, constrained: bool, temperature: float) -> tuple[float, int]:
    def one(i: int) -> int:
        body = {"prompt": f"Here is a list of people ({i}) as JSON:\n", "max_tokens": max_tokens,
                "temperature": temperature, "seed": i}
        if constrained:
            body["json_schema"] = SCHEMA
        else:
            body["ignore_eos"] = True
        r = httpx.post(f"{url}/v1/completions", json=body, timeout=600)
        r.raise_for_status()
        out = r.json()
        if constrained and out["choices"][0]["finish_reason"] == "stop":
            json.loads(out["choices"][0]["text"])
        return out["usage"]["completion_tokens"]

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        tokens = sum(pool.map(one, range(concurrency)))
    return time.perf_counter() - t0, tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", default="http://127.0.0.1:8080")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    run(args.url, args.concurrency, 8, False, args.temperature)  # warm up
    for constrained in (False, True, False, True)[: 2 * args.rounds]:
        seconds, tokens = run(args.url, args.concurrency, args.max_tokens, constrained, args.temperature)
        print(f"{'json_schema  ' if constrained else 'unconstrained'} {tokens:5d} tokens {seconds:6.2f}s "
              f"{tokens / seconds:7.1f} tok/s")


if __name__ == "__main__":
    main()
