"""gptjax-serve under load: continuous batching against one request at a time.

    python -m benchmarks.serve --workdir=W [--clients=1,4,16 --seconds=20 --max_tokens=64
                               --slots=16]

Starts the server twice on the same checkpoint: with --slots (continuous batching) and with
one slot (requests served one after another; the rest wait in the queue). Against each, C
client threads (the `openai` client, streaming) send chat requests back to back for
--seconds (each a different prompt and seed, sampled at temperature 1), for every C of
--clients. Reported per (mode, C): completed requests, generated tokens/s (usage counts of
the requests completed in the window / its length), time to first token and inter-token
latency percentiles as the clients saw them. Writes benchmarks/results/serve_<run>.{json,md}.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

PROMPTS = ["Give three tips for staying healthy.", "What is the capital of France?",
           "Describe a sunset in two sentences.", "How do I make a cup of tea?",
           "Name three primary colors.", "Write a haiku about the sea.",
           "Explain what a computer does.", "Why is the sky blue?"]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _start(workdir: str, slots: int, max_queue: int, *flags: str) -> tuple[subprocess.Popen, str]:
  """gptjax-serve on a free port (with any further `flags`), once its /health answers."""
  port = _free_port()
  proc = subprocess.Popen([sys.executable, "-m", "gptjax.serve.server", f"--workdir={workdir}",
                           f"--port={port}", f"--slots={slots}", f"--max_queue={max_queue}",
                           *flags],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  base = f"http://127.0.0.1:{port}"
  deadline = time.time() + 600
  while time.time() < deadline:
    if proc.poll() is not None:
      raise RuntimeError(proc.stdout.read())
    try:
      with urllib.request.urlopen(base + "/health", timeout=5):
        return proc, base
    except OSError:
      time.sleep(0.5)
  raise RuntimeError("gptjax-serve did not come up in 10 minutes")


def _client(base: str, index: int, until: float, max_tokens: int) -> list[dict]:
  import openai
  client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=600)
  records, n = [], 0
  while time.time() < until:
    sent = time.perf_counter()
    stamps, usage = [], None
    stream = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": PROMPTS[(index + n) % len(PROMPTS)]}],
        max_tokens=max_tokens, temperature=1.0, seed=1000 * index + n, stream=True,
        stream_options={"include_usage": True})
    for chunk in stream:
      if chunk.choices and chunk.choices[0].delta.content:
        stamps.append(time.perf_counter())
      if chunk.usage:
        usage = chunk.usage
    done = time.time()
    n += 1
    records.append({"sent": sent, "stamps": stamps, "tokens": usage.completion_tokens,
                    "done": done})
  return records


def _measure(base: str, clients: int, seconds: float, max_tokens: int) -> dict:
  start = time.time()
  until = start + seconds
  with concurrent.futures.ThreadPoolExecutor(clients) as pool:
    results = list(pool.map(lambda i: _client(base, i, until, max_tokens), range(clients)))
  records = [r for rs in results for r in rs]
  # Requests finish after the window closes; count tokens over the time they really took.
  elapsed = max(r["done"] for r in records) - start
  ttft = [r["stamps"][0] - r["sent"] for r in records if r["stamps"]]
  itl = [b - a for r in records for a, b in zip(r["stamps"], r["stamps"][1:])]
  pct = lambda xs, q: float(np.percentile(xs, q) * 1000) if xs else float("nan")
  return {"clients": clients, "requests": len(records),
          "tokens_per_sec": sum(r["tokens"] for r in records) / elapsed,
          "ttft_ms": {f"p{q}": pct(ttft, q) for q in (50, 90, 99)},
          "itl_ms": {f"p{q}": pct(itl, q) for q in (50, 90, 99)}}


def main(argv=None) -> None:
  from benchmarks.results_files import host_info, host_line, save
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--clients", default="1,4,16")
  parser.add_argument("--seconds", type=float, default=20.0)
  parser.add_argument("--max_tokens", type=int, default=64)
  parser.add_argument("--slots", type=int, default=16)
  args = parser.parse_args(argv)
  counts = [int(c) for c in args.clients.split(",")]
  rows = []
  for mode, slots in (("continuous batching", args.slots), ("one at a time", 1)):
    proc, base = _start(args.workdir, slots, max_queue=max(counts) * 2)
    try:
      _measure(base, 1, 2.0, 8)  # warm the client path
      for clients in counts:
        rows.append({"mode": mode, "slots": slots, **_measure(base, clients, args.seconds,
                                                               args.max_tokens)})
        print(rows[-1], flush=True)
    finally:
      proc.terminate()
      proc.wait(timeout=60)
  name = os.path.basename(os.path.abspath(args.workdir))
  lines = [f"`python -m benchmarks.serve --workdir={args.workdir} --clients={args.clients} "
           f"--seconds={args.seconds:g} --max_tokens={args.max_tokens} --slots={args.slots}`; "
           f"host: {host_line(host_info())}", "",
           "| mode | clients | requests | generated tokens/s | TTFT p50 / p90 / p99 ms | "
           "inter-token p50 / p90 / p99 ms |", "|---|---|---|---|---|---|"]
  for r in rows:
    t, i = r["ttft_ms"], r["itl_ms"]
    lines.append(f"| {r['mode']} ({r['slots']} slot{'s' if r['slots'] > 1 else ''}) | "
                 f"{r['clients']} | {r['requests']} | {r['tokens_per_sec']:,.0f} | "
                 f"{t['p50']:.0f} / {t['p90']:.0f} / {t['p99']:.0f} | "
                 f"{i['p50']:.1f} / {i['p90']:.1f} / {i['p99']:.1f} |")
  results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
  save(results, f"serve_{name}", {"rows": rows, "host": host_info(), "args": vars(args)})
  with open(os.path.join(results, f"serve_{name}.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
