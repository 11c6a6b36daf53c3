"""GRPO's rollout against gptjax-sample's generation: tokens/s on the same model and prompts.

    python -m benchmarks.rollout_speed --config=configs/grpo.py [--config.x=y ...] [--repeats=5]

Builds the GRPO run the config describes (its policy from init.workdir, its reference and
reward model) and times, on one batch of train.batch_size prompts, warm (compiled first):
  rollout   the task's jitted rollout call: sampling with the KV cache and the end-of-turn
            stop, the reference log-probs and the reward-model scores, rewards and advantages
  sampling  the same sampler alone (gptjax.rollout.sample, with the stop)
  sample    gptjax-sample's path (gptjax.generate.generate: every row runs max_new_tokens)
Tokens/s counts generated tokens (the rows' lengths up to their stop; all N for `sample`).
Prints one JSON line and writes it to benchmarks/results/rollout_speed.json.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import numpy as np

from benchmarks.results_files import host_info, host_line


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def measure(config, repeats: int) -> dict:
  from gptjax import generate, rollout, sharding, train as train_lib
  from gptjax.init_from import source_tokenizer
  from gptjax.load import load_workdir
  run = train_lib.build_run(config, tokenizer=source_tokenizer(config.init))
  task, g = run.task, config.grpo
  params = load_workdir(config.init.workdir, mesh=run.mesh).params
  batch = sharding.shard_batch(next(run.datasets.train), run.mesh)
  stop = task._stop()
  vocab = task.tokenizer.vocab_size
  out = {}
  with sharding.rules_context(run.mesh):
    lengths = []

    def rollout_call():
      train_batch, metrics = task.rollout(params, batch, run.frozen, 0)
      lengths.append(metrics["rollout/completion_tokens"] * batch["prompt"].shape[0])
      return train_batch["tokens"]
    seconds = _median_seconds(rollout_call, repeats)
    out["rollout"] = {"seconds": seconds, "tokens": lengths[-1]}

    sampler = jax.jit(lambda p, x, pad, key: rollout.sample(
        task.model, p, x, key, max_new_tokens=g.max_new_tokens, left_pad_B=pad,
        temperature=g.temperature, valid_vocab=vocab, stop_id=stop))
    key = jax.random.key(0)
    seconds = _median_seconds(lambda: sampler(params, batch["prompt"], batch["left_pad"], key),
                              repeats)
    tokens = float(np.asarray(sampler(params, batch["prompt"], batch["left_pad"], key)[2]).sum())
    out["sampling"] = {"seconds": seconds, "tokens": tokens}

  prompt = np.asarray(jax.device_get(batch["prompt"]))
  seconds = _median_seconds(lambda: generate.generate(
      task.model, params, prompt, g.max_new_tokens, key, temperature=g.temperature,
      valid_vocab=vocab), repeats)
  out["sample"] = {"seconds": seconds, "tokens": float(prompt.shape[0] * g.max_new_tokens)}
  for v in out.values():
    v["tokens_per_sec"] = v["tokens"] / v["seconds"]
  return {"rows": int(prompt.shape[0]), "prompt_len": int(prompt.shape[1]),
          "max_new_tokens": g.max_new_tokens, "model": config.init.workdir, **out}


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import define_config_flag, run_app, run_cli
  define_config_flag(None, "a GRPO config (task.name=grpo) whose init.workdir holds the policy",
                     lock_config=True)
  flags.DEFINE_integer("repeats", 5, "timed calls of each (the median is reported)")
  flags.DEFINE_string("out", "benchmarks/results/rollout_speed.json", "where to write the JSON")
  FLAGS = flags.FLAGS

  def _main(_):
    def body():
      result = measure(FLAGS.config, FLAGS.repeats)
      device = jax.devices()[0]
      accelerator = (None if device.platform == "cpu"
                     else f"{jax.device_count()} x {device.device_kind}")
      result["host"] = host_line(host_info(accelerator))
      result["command"] = " ".join(["python -m benchmarks.rollout_speed"] + sys.argv[1:])
      os.makedirs(os.path.dirname(FLAGS.out) or ".", exist_ok=True)
      with open(FLAGS.out, "w") as f:
        json.dump(result, f, indent=1)
      print(json.dumps(result))
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
