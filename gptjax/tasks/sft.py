"""Supervised fine-tuning on conversations: next-token loss on the assistant turns only.

The loss is the language-modelling one (tasks/lm.py) over conversation batches
(gptjax.data.chat_data): "mask" covers exactly each assistant message's content and its
end-of-turn token, so metrics["weight"] counts trained tokens and gradient accumulation and
held-out evaluation weight every trained token equally. Packed windows carry segment ids.
"""

from __future__ import annotations

from gptjax.tasks.lm import LMTask


class SFTTask(LMTask):

  def datasets(self, tokenizer=None):
    from gptjax.data.chat_data import make_chat_datasets
    return self._keep_tokenizer(make_chat_datasets(self.config, tokenizer=tokenizer))
