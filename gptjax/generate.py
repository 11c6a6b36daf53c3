"""Sampling with a KV cache: one prefill over the prompt, then one-token decode steps.

    gptjax-sample --workdir=W --prompt="ROMEO:" [--temperature --top_k --top_p
                  --max_new_tokens --num_samples --seed --step]

A continuation longer than the model's context slides: the cache is rebuilt from the last
half-context of tokens and decoding goes on (nanoGPT crops its context the same way).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gptjax.errors import UserError
from gptjax import rollout
from gptjax.model import GPT, GPTConfig


@functools.partial(jax.jit, static_argnames=("cfg", "max_new_tokens", "temperature", "top_k",
                                             "top_p", "valid_vocab"))
def _generate_segment(cfg: GPTConfig, params, prompt_BP, rng, *, max_new_tokens: int,
                      temperature: float, top_k: int, top_p: float, valid_vocab: int):
  tokens_BN, _, _ = rollout.sample(GPT(cfg), params, prompt_BP, rng,
                                   max_new_tokens=max_new_tokens, temperature=temperature,
                                   top_k=top_k, top_p=top_p, valid_vocab=valid_vocab)
  return tokens_BN


def generate(model: GPT, params, prompt_BP, max_new_tokens: int, rng: jax.Array,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             valid_vocab: int | None = None) -> np.ndarray:
  """Continue each row of `prompt_BP` by `max_new_tokens` tokens; returns int32[B, N]."""
  if max_new_tokens <= 0:
    raise UserError(f"--max_new_tokens must be positive, got {max_new_tokens}")
  if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0:
    raise UserError("need --temperature >= 0, 0 < --top_p <= 1 and --top_k >= 0")
  max_len = model.cfg.max_len
  keep = max(1, max_len // 2)  # context kept when the window slides
  kwargs = dict(temperature=float(temperature), top_k=int(top_k), top_p=float(top_p),
                valid_vocab=int(valid_vocab or model.cfg.vocab_size))
  context = np.asarray(prompt_BP, np.int32)
  if context.shape[0] < 1:
    raise UserError(f"--num_samples must be positive, got {context.shape[0]}")
  if context.shape[1] >= max_len:  # cropping it silently would answer another prompt
    raise UserError(f"the prompt is {context.shape[1]} tokens but the model's context is "
                    f"{max_len}: shorten --prompt to at most {max_len - 1} tokens")
  out, segment = [], 0
  remaining = max_new_tokens
  while remaining > 0:
    n = max_len - context.shape[1]
    if segment == 0:  # a short answer costs only what it asks for
      n = min(remaining, n)
    # Later segments all have one shape (keep tokens in, max_len - keep out), so the last,
    # shorter one reuses their compilation and is cut after; each token's draw depends only
    # on its position, so the kept tokens are the same.
    new = np.asarray(_generate_segment(model.cfg, params, jnp.asarray(context),
                                       jax.random.fold_in(rng, segment), max_new_tokens=n,
                                       **kwargs))
    new = new[:, :remaining]
    out.append(new)
    remaining -= new.shape[1]
    segment += 1
    context = np.concatenate([context, new], axis=1)[:, -keep:]
  return np.concatenate(out, axis=1)


def sample_text(loaded, prompt: str, max_new_tokens: int = 200, temperature: float = 0.8,
                top_k: int = 200, top_p: float = 1.0, seed: int = 0,
                num_samples: int = 1) -> list[str]:
  tok = loaded.tokenizer
  ids = list(tok.encode(prompt)) if prompt else []
  if getattr(tok, "bos_id", None) is not None:  # Hugging Face models that expect one
    ids = [tok.bos_id] + ids
  if not ids:  # an empty prompt starts a fresh document
    ids = [tok.eos_id] if tok.eos_id is not None else list(tok.encode("\n"))
  prompt_BP = np.tile(np.asarray(ids, np.int32)[None], (num_samples, 1))
  new = generate(loaded.model, loaded.params, prompt_BP, max_new_tokens, jax.random.key(seed),
                 temperature, top_k, top_p, valid_vocab=tok.vocab_size)
  return [prompt + tok.decode(row.tolist()) for row in new]


def chat_replies(loaded, conversation: list[dict], max_new_tokens: int = 200,
                 temperature: float = 0.8, top_k: int = 200, top_p: float = 1.0, seed: int = 0,
                 num_samples: int = 1) -> list[str]:
  """The model's next assistant turn(s) after `conversation`, rendered in the tokenizer's
  chat format and cut at the first end-of-turn token (the reply without control tokens)."""
  from gptjax.data import chat_template
  tok = loaded.tokenizer
  try:
    end = chat_template.end_of_turn_id(tok)
  except UserError:
    if chat_template.own_template(tok):  # an imported chat model: its template's problem
      raise
    raise UserError("this checkpoint's tokenizer has no chat tokens: chat with a model "
                    "fine-tuned with task.name=sft, or use --prompt") from None
  ids = chat_template.render_prompt(conversation, tok)
  prompt_BP = np.tile(ids[None], (num_samples, 1))
  new = generate(loaded.model, loaded.params, prompt_BP, max_new_tokens, jax.random.key(seed),
                 temperature, top_k, top_p, valid_vocab=tok.vocab_size)
  replies = []
  for row in new:
    stop = np.flatnonzero(row == end)
    replies.append(tok.decode(row[:stop[0] if stop.size else len(row)].tolist()))
  return replies


def sample_from_workdir(workdir: str, prompt: str, **kwargs) -> str:
  from gptjax.load import load_workdir
  return sample_text(load_workdir(workdir), prompt, **kwargs)[0]


def main(argv=None) -> None:
  from absl import flags

  from gptjax.load import load_workdir
  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("workdir", None, "run folder written by gptjax-train", required=True)
  flags.DEFINE_string("prompt", "", "text to continue")
  flags.DEFINE_string("user", "", "a user message: print the chat model's reply (the chat "
                      "template; stops at end of turn)")
  flags.DEFINE_string("system", "", "with --user: a system message before it")
  flags.DEFINE_integer("max_new_tokens", 200, "tokens to generate")
  flags.DEFINE_float("temperature", 0.8, "0 = greedy")
  flags.DEFINE_integer("top_k", 200, "keep the k most likely tokens (0 = all)")
  flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1 = off)")
  flags.DEFINE_integer("num_samples", 1, "independent samples")
  flags.DEFINE_integer("seed", 0, "sampling seed")
  flags.DEFINE_integer("step", None, "checkpoint step (default: newest)")
  FLAGS = flags.FLAGS

  def _main(_):
    def body():
      if FLAGS.user and FLAGS.prompt:
        raise UserError("give --user (chat) or --prompt (plain text), not both")
      if FLAGS.system and not FLAGS.user:
        raise UserError("--system needs a --user message")
      loaded = load_workdir(FLAGS.workdir, FLAGS.step)
      options = (FLAGS.max_new_tokens, FLAGS.temperature, FLAGS.top_k, FLAGS.top_p, FLAGS.seed,
                 FLAGS.num_samples)
      if FLAGS.user:
        system = [{"role": "system", "content": FLAGS.system}] if FLAGS.system else []
        texts = chat_replies(loaded, system + [{"role": "user", "content": FLAGS.user}],
                             *options)
      else:
        texts = sample_text(loaded, FLAGS.prompt, *options)
      for i, text in enumerate(texts):
        if len(texts) > 1:
          print(f"--- sample {i}")
        print(text)
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
