"""A frozen second model in the train step: a reference policy, a reward model, a teacher.

Tasks load one in `init_frozen` (gptjax.tasks): its params are restored onto this run's mesh
and passed to the jitted step as an argument (never baked into the compiled program, never
trained, never checkpointed: a resumed run loads it again from its workdir).
"""

from __future__ import annotations

from gptjax.errors import UserError
from gptjax.load import Loaded, load_workdir


def load(workdir: str, step: int, mesh, flag: str) -> Loaded:
  """The checkpoint of `workdir` (step 0: its newest intact one) on `mesh`; errors name `flag`."""
  if not workdir:
    raise UserError(f"{flag} is not set: point it at a trained run's workdir")
  try:
    return load_workdir(workdir, step or None, mesh=mesh)
  except UserError as e:
    raise UserError(f"{flag}={workdir}: {e}") from None


def require_same_tokenizer(loaded: Loaded, tokenizer, flag: str) -> None:
  """A frozen model scores this run's token ids, so both must mean the same text."""
  if tokenizer is None or loaded.tokenizer.to_json() == tokenizer.to_json():
    return
  from gptjax.data import chat_template
  if (chat_template.with_chat_tokens(loaded.tokenizer).to_json() == tokenizer.to_json()
      and loaded.tokenizer.vocab_size < tokenizer.vocab_size):
    raise UserError(f"{flag}={loaded.workdir} has no chat tokens: it is a pretrained model; "
                    "point it at a chat (SFT) run that started from it (task.name=sft)")
  raise UserError(f"{flag}={loaded.workdir} has another tokenizer (vocabulary "
                  f"{loaded.tokenizer.vocab_size}) than this run ({tokenizer.vocab_size}): "
                  "both models must share one; start this run from a checkpoint with the same "
                  "tokenizer (--config.init.workdir) or set --config.data.tokenizer.path")
