"""Translation by a chat-format LM (gptjax.data.parallel), scored by BLEU.

Each source sentence is the user's turn; the model's answer, decoded by beam search through
the KV cache (gptjax.beam_search; beams=1 is greedy; batched by gptjax.evals.decoding) and cut
at the end-of-turn token, is the translation. BLEU: gptjax.evals.bleu (sacrebleu).
"""

from __future__ import annotations

from gptjax.data import parallel
from gptjax.evals import decoding
from gptjax.evals.bleu import bleu_line, corpus_bleu
from gptjax.evals.result import EvalResult


def translate(loaded, sources: list[str], *, beams: int = 5, length_penalty: float = 1.0,
              max_new_tokens: int = 64, batch_size: int = 32) -> list[str]:
  return decoding.chat_answers(loaded, sources, beams=beams, length_penalty=length_penalty,
                               max_new_tokens=max_new_tokens, batch_size=batch_size)


def bleu(loaded, options) -> EvalResult:
  """BLEU of the model's translations of options.path's source sentences."""
  spec = options.languages or (loaded.config.data.get("languages", "") if loaded.config else "")
  pairs = parallel.read_pairs(options.path, spec)
  if options.limit:
    pairs = pairs[:options.limit]
  sources, references = zip(*pairs)
  hypotheses = translate(loaded, list(sources), beams=options.beams,
                         length_penalty=options.length_penalty,
                         max_new_tokens=options.max_new_tokens, batch_size=options.batch_size)
  result = corpus_bleu(hypotheses, list(references), options.n_bootstrap)
  figures = {k: result[k] for k in ("bleu", "bleu_lowercase", "brevity_penalty", "sentences")}
  if "bleu_ci95" in result:
    figures["bleu_ci95"] = result["bleu_ci95"]
  decoding = (f"beam search, {options.beams} beams, length penalty {options.length_penalty}"
              if options.beams > 1 else "greedy")
  lines = [f"{options.path} ({spec}), {len(pairs)} sentences, {decoding}: {bleu_line(result)}.",
           "", "| source | reference | model |", "|---|---|---|"]
  cell = lambda s: s.replace("|", "\\|")
  lines += [f"| {cell(s)} | {cell(r)} | {cell(h)} |"
            for s, r, h in list(zip(sources, references, hypotheses))[:options.samples]]
  details = {**result, "decoding": decoding,
             "translations": [{"source": s, "reference": r, "model": h}
                              for s, r, h in zip(sources, references, hypotheses)]}
  return EvalResult(figures, lines, details)
