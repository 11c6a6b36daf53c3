"""gptjax-chat: talk to a chat model in the terminal, its reply streamed as it is generated.

    gptjax-chat --workdir=W [--system="You are terse." --temperature=0.7 --top_k=50
                --top_p=0.95 --max_new_tokens=256 --seed=0 --step=N]

Multi-turn, rendered with the chat template the model was trained with, on the serving
engine (one slot). Commands: /reset (forget the conversation, keep the system prompt),
/system TEXT (set it and reset), /quit (or /exit, Ctrl-D). When the conversation no longer
fits the context with room for a reply, its oldest turns are dropped, and it says so.
"""

from __future__ import annotations

import sys

PROMPT = "you> "
REPLY = "model> "


class Chat:

  def __init__(self, loaded, *, system: str = "", temperature: float = 0.7, top_k: int = 50,
               top_p: float = 0.95, max_new_tokens: int = 256, seed: int = 0):
    from gptjax.data import chat_template
    from gptjax.errors import UserError
    from gptjax.serve.engine import Engine
    self.loaded, self.system = loaded, system
    self.settings = dict(temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    self.max_new_tokens = max_new_tokens
    try:
      self.end = chat_template.end_of_turn_id(loaded.tokenizer)
    except UserError as e:
      raise UserError(f"{loaded.workdir} is not a chat model ({e}): fine-tune it with "
                      "task.name=sft first, or use gptjax-sample --prompt") from None
    self.engine = Engine(loaded.model, loaded.params, num_slots=1, max_queue=0,
                         valid_vocab=loaded.tokenizer.vocab_size)
    self.turns: list[dict] = []
    self.turn = 0

  def reset(self) -> None:
    self.turns = []

  def _prompt(self, write) -> list[int]:
    from gptjax.data import chat_template
    system = [{"role": "system", "content": self.system}] if self.system else []
    while True:
      ids = chat_template.render_prompt(system + self.turns, self.loaded.tokenizer)
      if len(ids) < self.loaded.model.cfg.max_len or len(self.turns) <= 1:
        return ids.tolist()
      self.turns = self.turns[2:]  # the oldest exchange goes
      write("(the conversation outgrew the context: its oldest turn was dropped)\n")

  def reply(self, message: str, write) -> str:
    """Streams the model's reply to `message` through `write`; returns it."""
    from gptjax.serve.engine import SamplingParams
    from gptjax.serve.text_stream import TextStream
    self.turns.append({"role": "user", "content": message})
    ids = self._prompt(write)
    room = self.loaded.model.cfg.max_len - len(ids)
    if room < 1:
      self.turns.pop()
      write("(that message alone fills the context: say something shorter)\n")
      return ""
    settings = dict(self.settings, seed=(self.settings["seed"] + self.turn) % 2**32)
    params = SamplingParams(max_tokens=min(self.max_new_tokens, room),
                            stop_token_ids=(self.end,), **settings)
    self.turn += 1
    text = TextStream(self.loaded.tokenizer)
    request = self.engine.submit(ids, params)
    finished = False
    while not finished:
      for event in self.engine.step():
        if event.request_id != request:
          continue
        if event.error:
          raise RuntimeError(event.error)
        if event.token_id != self.end:
          write(text.add(event.token_id))
        finished = event.finished is not None
    write(text.finish())
    self.turns.append({"role": "assistant", "content": text.text})
    return text.text


def run(chat: Chat, read=input, write=None) -> None:
  write = write or (lambda s: (sys.stdout.write(s), sys.stdout.flush()))
  write("gptjax-chat: /reset, /system TEXT, /quit\n")
  while True:
    try:
      line = read(PROMPT)
    except (EOFError, KeyboardInterrupt):
      write("\n")
      return
    command = line.strip()
    if command in ("/quit", "/exit"):
      return
    if command == "/reset":
      chat.reset()
      write("(conversation reset)\n")
      continue
    if command.startswith("/system"):
      chat.system = command[len("/system"):].strip()
      chat.reset()
      write("(system prompt set; conversation reset)\n")
      continue
    if not command:
      continue
    write(REPLY)
    chat.reply(line, write)
    write("\n")


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("workdir", None, "a chat model's run folder", required=True)
  flags.DEFINE_integer("step", None, "checkpoint step (default: newest)")
  flags.DEFINE_string("system", "", "system prompt")
  flags.DEFINE_float("temperature", 0.7, "0 = greedy")
  flags.DEFINE_integer("top_k", 50, "keep the k most likely tokens (0 = all)")
  flags.DEFINE_float("top_p", 0.95, "nucleus sampling mass (1 = off)")
  flags.DEFINE_integer("max_new_tokens", 256, "longest reply")
  flags.DEFINE_integer("seed", 0, "sampling seed")
  FLAGS = flags.FLAGS

  def _main(_):
    def body():
      from gptjax.errors import UserError
      from gptjax.load import load_workdir, one_device_mesh
      if FLAGS.temperature < 0 or not 0 < FLAGS.top_p <= 1 or FLAGS.top_k < 0:
        raise UserError("need --temperature >= 0, 0 < --top_p <= 1 and --top_k >= 0")
      chat = Chat(load_workdir(FLAGS.workdir, FLAGS.step, mesh=one_device_mesh()),
                  system=FLAGS.system,
                  temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                  max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed)
      run(chat)
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
