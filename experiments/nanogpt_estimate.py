"""Score a trained workdir the way nanoGPT prints its validation loss, to compare like with like.

    python -m experiments.nanogpt_estimate --workdir=runs/shakespeare_char_cpu [--draws=200]
        [--eval_iters=20] [--batch_size=12] [--bar=1.88]

nanoGPT's `estimate_loss` averages `eval_iters` batches of `batch_size` windows that start at
uniformly random offsets of the validation split (with replacement); gptjax evaluates every
token of the split once. This draws nanoGPT's estimate `--draws` times from one gptjax model
and prints its mean and spread, how often a draw lands at or below `--bar`, and the
whole-split loss, as JSON (also appended to WORKDIR/eval_results.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os

import jax
import numpy as np

from gptjax import sharding
from gptjax.data.prepare import prepare_data
from gptjax.load import load_workdir
from gptjax.metrics import read_metrics
from gptjax.tasks.lm import token_losses


def window_losses(loaded, windows: np.ndarray, chunk: int) -> np.ndarray:
  """Mean next-token loss of each [seq_len + 1] window, in chunks of `chunk` windows."""
  model, params, mesh = loaded.model, loaded.params, loaded.mesh
  fn = jax.jit(lambda p, t: token_losses(model, p, t[:, :-1], t[:, 1:], None)[0].mean(axis=1))
  out = []
  with sharding.rules_context(mesh):
    for first in range(0, len(windows), chunk):
      batch = sharding.shard_batch({"tokens": windows[first:first + chunk]}, mesh)
      out.append(np.asarray(jax.device_get(fn(params, batch["tokens"]))))
  return np.concatenate(out)


def estimate(workdir: str, draws: int, eval_iters: int, batch_size: int, bar: float,
             seed: int = 0) -> dict:
  loaded = load_workdir(workdir)
  tokens = np.asarray(prepare_data(loaded.config, loaded.tokenizer).tokens["validation"])
  seq_len = loaded.config.data.seq_len
  per_draw = eval_iters * batch_size
  # nanoGPT: torch.randint(len(data) - block_size, ...) -> x = data[i:i+T], y = data[i+1:i+1+T]
  starts = np.random.default_rng(seed).integers(0, len(tokens) - seq_len, draws * per_draw)
  windows = tokens[starts[:, None] + np.arange(seq_len + 1)[None, :]].astype(np.int32)
  # Equal-sized batches: the mean of batch means is the mean over a draw's windows.
  draw_losses = window_losses(loaded, windows, per_draw).reshape(draws, per_draw).mean(axis=1)
  result = {
      "step": loaded.step,
      "protocol": f"nanoGPT estimate_loss: {eval_iters} batches x {batch_size} random windows "
                  f"of {seq_len}, drawn {draws} times (seed {seed})",
      "estimate_mean": round(float(draw_losses.mean()), 4),
      "estimate_std": round(float(draw_losses.std(ddof=1)), 4),
      "estimate_min": round(float(draw_losses.min()), 4),
      "estimate_max": round(float(draw_losses.max()), 4),
      f"fraction_at_or_below_{bar}": round(float((draw_losses <= bar).mean()), 3),
  }
  evals = [r for r in read_metrics(workdir) if "eval/loss" in r and r["step"] == loaded.step]
  if evals:
    result["whole_split_loss"] = round(evals[-1]["eval/loss"], 4)
  with open(os.path.join(workdir, "eval_results.jsonl"), "a") as f:
    f.write(json.dumps(result) + "\n")
  return result


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--draws", type=int, default=200)
  parser.add_argument("--eval_iters", type=int, default=20)
  parser.add_argument("--batch_size", type=int, default=12)
  parser.add_argument("--bar", type=float, default=1.88)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  print(json.dumps(estimate(args.workdir, args.draws, args.eval_iters, args.batch_size,
                            args.bar, args.seed)))


if __name__ == "__main__":
  main()
