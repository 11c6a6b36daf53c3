"""`gptjax-eval --eval=human_export`: a blinded review pack of this model's outputs, or of this
model's against another's (evals.human_export.compare), for human raters
(gptjax.evals.review_pack; read the filled sheets back with gptjax-review).

Prompts: {"prompt": str} JSON lines (evals.human_export.path). A chat model answers each as
the user's turn, a base model continues it; by beam search (decoding.complete, beams=1 is
greedy), so the outputs are what the model does at its best, reproducibly. The pack goes to
evals.human_export.out (default W/review/step_N); the key records both workdirs, their steps
and the decoding settings.
"""

from __future__ import annotations

import os

from gptjax.data import chat_template
from gptjax.errors import UserError
from gptjax.evals import decoding, review_pack
from gptjax.evals.accuracy import read_jsonl
from gptjax.evals.result import EvalResult


def outputs_of(loaded, prompts: list[str], options) -> list[str]:
  tok = loaded.tokenizer
  chat = chat_template.has_chat_tokens(tok) or chat_template.has_own_format(tok)
  answer = decoding.chat_answers if chat else decoding.text_continuations
  return answer(loaded, prompts, beams=options.beams, max_new_tokens=options.max_new_tokens,
                batch_size=options.batch_size)


def human_export(loaded, options) -> EvalResult:
  from gptjax.load import load_workdir
  prompts = [r["prompt"] for r in read_jsonl(options.path, ("prompt",))]
  if options.limit:
    prompts = prompts[:options.limit]
  models = {loaded.workdir or "model": (loaded, loaded.step)}
  if options.compare:
    other = load_workdir(options.compare)
    if options.compare in models:
      raise UserError("evals.human_export.compare names the model under evaluation itself")
    models[options.compare] = (other, other.step)
  outputs = {label: outputs_of(m, prompts, options) for label, (m, _) in models.items()}
  out = options.out or os.path.join(loaded.workdir or ".", "review", f"step_{loaded.step}")
  settings = {"steps": {label: step for label, (_, step) in models.items()},
              "beams": options.beams, "max_new_tokens": options.max_new_tokens,
              "prompts": options.path}
  summary = review_pack.write_pack(out, prompts, outputs, options.kind, options.seed, settings)
  lines = [f"Review pack in {out}: {summary['items']} items, {options.kind}, models "
           f"{', '.join(models)}. Give raters pack.html (or pack.csv), keep key.json; read "
           f"their files back with `gptjax-review --key={out}/key.json --ratings=A.csv,B.csv`."]
  return EvalResult({"items": summary["items"]}, lines, {"out": out, **settings})
