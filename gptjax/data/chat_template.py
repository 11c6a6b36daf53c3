"""Chat formats: how a conversation becomes token ids, for training, sampling, chat and serving.

One `render(conversation, tokenizer, generation_prompt)` serves every model. What it writes is
data, a `ChatFormat` the tokenizer carries: per role the text before and after a message's
content, the end-of-turn text, an optional beginning of sequence and the generation prompt.
  - gptjax's own (`GPTJAX`), for tokenizers that a chat task gave its control tokens:
        <|system|>You are terse.<|end|><|user|>Hi<|end|><|assistant|>Hello.<|end|>
    The four control tokens are special tokens appended to the vocabulary
    (`with_chat_tokens`): one id each, which no text encodes to.
  - an imported model's own, derived from its Jinja chat template and checked against it
    (gptjax.data.jinja_chat), e.g. Qwen2's <|im_start|>user\\nHi<|im_end|>\\n...

Each content is tokenized on its own (no token merges across a turn boundary, and no content
forges a control token); the text around contents is the template's, so its special tokens
are recognised. Training learns each assistant content and the end-of-turn token after it
(so the model learns to stop), never the rest; a prompt for generation ends with the
format's generation prompt.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import weakref

import numpy as np

from gptjax.data.tokenizers import Tokenizer, special_token_id, with_added_tokens
from gptjax.errors import UserError

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


@dataclasses.dataclass(frozen=True)
class ChatFormat:
  """A chat template as data: a message is `before + content + after` of its role."""

  roles: dict  # role -> (text before its content, text after it)
  end_of_turn: str  # how the assistant's "after" starts: learnt, and generation stops there
  generation_prompt: str  # appended to ask for the next assistant turn
  bos: str = ""  # once, before the first message
  default_system: str | None = None  # content of the system turn added when there is none
  strip: tuple[str, ...] = ()  # roles whose content is trimmed (Jinja's `| trim`)

  def __post_init__(self):
    if not self.roles.get("assistant", ("", "-"))[1].startswith(self.end_of_turn):
      raise ValueError("a format needs an assistant role whose text after its content starts "
                       "with end_of_turn")

  def segments(self, conversation: list[dict], generation_prompt: bool) -> list[tuple[str, str]]:
    """(kind, text) pieces in order. Kinds: "text" (the template's), "content" (a message's,
    untrained), "reply" (an assistant's content, trained) and "end" (the template's text
    after a reply, whose end-of-turn tokens are trained)."""
    if self.default_system is not None and (not conversation
                                            or conversation[0]["role"] != "system"):
      conversation = [{"role": "system", "content": self.default_system}, *conversation]
    out = [("text", self.bos)]
    for message in conversation:
      role = message["role"]
      if role not in self.roles:
        if role == "system":
          raise UserError("this model's chat template has no system role gptjax can write: "
                          "drop the system message (or fold it into the first user message)")
        raise UserError(f"chat role {role!r} is not one of {sorted(self.roles)}")
      before, after = self.roles[role]
      content = message["content"].strip() if role in self.strip else message["content"]
      reply = role == "assistant"
      out += [("text", before), ("reply" if reply else "content", content),
              ("end" if reply else "text", after)]
    if generation_prompt:
      out.append(("text", self.generation_prompt))
    return out

  def text(self, conversation: list[dict], generation_prompt: bool = False) -> str:
    return "".join(text for _, text in self.segments(conversation, generation_prompt))

  def template_texts(self) -> set[str]:
    """Every piece of template text `segments` can write (what `compile_format` tokenizes)."""
    return {self.bos, self.generation_prompt, self.end_of_turn,
            *(text for pair in self.roles.values() for text in pair)}

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), "roles": {r: list(t) for r, t in self.roles.items()},
            "strip": list(self.strip)}

  @classmethod
  def from_json(cls, d: dict) -> "ChatFormat":
    return cls(**{**d, "roles": {r: tuple(t) for r, t in d["roles"].items()},
                  "strip": tuple(d.get("strip", ()))})


GPTJAX = ChatFormat(roles={role: (token, END) for role, token in ROLE_TOKENS.items()},
                    end_of_turn=END, generation_prompt=ASSISTANT)


@dataclasses.dataclass(frozen=True)
class Compiled:
  """A format with its template texts tokenized once (by the tokenizer, special tokens
  recognised): rendering then tokenizes only contents."""

  format: ChatFormat
  ids: dict  # template text -> int32 ids
  end_ids: np.ndarray  # the end-of-turn tokens that start the text after a reply


def compile_format(fmt: ChatFormat, encode_template) -> Compiled:
  """`encode_template(list of texts) -> list of id lists`, special tokens recognised. The
  text after a reply is tokenized whole (a token that strips the whitespace after it, as
  Phi-3's do, strips it here too); its end-of-turn tokens must lead it."""
  texts = sorted(fmt.template_texts())
  ids = {t: np.asarray(x, np.int32).reshape(-1) for t, x in zip(texts, encode_template(texts))}
  end, after = ids[fmt.end_of_turn], ids[fmt.roles["assistant"][1]]
  if not len(end) or not np.array_equal(after[:len(end)], end):
    raise UserError(f"the chat format's end of turn {fmt.end_of_turn!r} is not the first "
                    f"token(s) of the text after an assistant message")
  return Compiled(fmt, ids, end)


def render_compiled(compiled: Compiled, tokenizer: Tokenizer, conversation: list[dict],
                    generation_prompt: bool = False) -> tuple[np.ndarray, np.ndarray]:
  segments = compiled.format.segments(conversation, generation_prompt)
  contents = iter(tokenizer.encode_batch([text for kind, text in segments
                                          if kind in ("content", "reply")]))
  pieces, trained = [], []
  for kind, text in segments:
    ids = compiled.ids[text] if kind in ("text", "end") else np.asarray(next(contents), np.int32)
    learn = np.full(len(ids), kind == "reply")
    learn[:len(compiled.end_ids) if kind == "end" else 0] = True
    pieces.append(ids)
    trained.append(learn)
  return np.concatenate(pieces).astype(np.int32), np.concatenate(trained).astype(bool)


# ---- the format a tokenizer carries

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def has_chat_tokens(tokenizer: Tokenizer) -> bool:
  return all(name in tokenizer.added_tokens for name in CHAT_TOKENS)


def own_template(tokenizer: Tokenizer) -> str | None:
  """The Jinja chat template an imported (Hugging Face) tokenizer brought, if any."""
  return getattr(getattr(tokenizer, "base", tokenizer), "chat_template", None) or None


def has_own_format(tokenizer: Tokenizer) -> bool:
  return not has_chat_tokens(tokenizer) and own_template(tokenizer) is not None


def with_chat_tokens(tokenizer: Tokenizer) -> Tokenizer:
  """The tokenizer with gptjax's control tokens appended where it lacks them; a tokenizer
  with a chat template of its own (an imported chat model) stays as it is."""
  return tokenizer if has_own_format(tokenizer) else with_added_tokens(tokenizer, CHAT_TOKENS)


def chat_token_ids(tokenizer: Tokenizer) -> dict[str, int]:
  ids = {name: special_token_id(tokenizer, name) for name in CHAT_TOKENS}
  missing = [name for name, i in ids.items() if i is None]
  if missing:
    raise UserError(f"the tokenizer has no chat tokens {missing}: it needs "
                    "gptjax.data.chat_template.with_chat_tokens (a chat task adds them)")
  return ids


def gptjax_format(tokenizer: Tokenizer) -> ChatFormat:
  """GPTJAX, led by the tokenizer's BOS where it has one (a Hugging Face base model)."""
  bos = getattr(tokenizer, "bos_id", None)
  return GPTJAX if bos is None else dataclasses.replace(GPTJAX, bos=tokenizer.decode([bos]))


def _added_token_encoder(tokenizer: Tokenizer):
  """Template text -> ids, with the appended tokens (and BOS) recognised by name."""
  names = {name: tokenizer.token_id(name) for name in tokenizer.added_tokens}
  if getattr(tokenizer, "bos_id", None) is not None:
    names[tokenizer.decode([tokenizer.bos_id])] = tokenizer.bos_id
  pattern = re.compile("|".join(map(re.escape, sorted(names, key=len, reverse=True))))

  def encode(texts):
    out = []
    for text in texts:
      ids, start = [], 0
      for match in pattern.finditer(text) if names else ():
        ids += [*tokenizer.encode(text[start:match.start()]), names[match.group()]]
        start = match.end()
      out.append([*ids, *tokenizer.encode(text[start:])])
    return out
  return encode


def _compile_for(tokenizer: Tokenizer) -> Compiled:
  if has_chat_tokens(tokenizer):
    return compile_format(gptjax_format(tokenizer), _added_token_encoder(tokenizer))
  if own_template(tokenizer) is not None:
    from gptjax.data import jinja_chat
    return jinja_chat.derive(getattr(tokenizer, "base", tokenizer))
  chat_token_ids(tokenizer)  # raises: no chat tokens
  raise AssertionError


def compiled_format(tokenizer: Tokenizer) -> Compiled:
  """The tokenizer's chat format, tokenized (once per tokenizer object)."""
  with _LOCK:
    cached = _CACHE.get(tokenizer)
  if cached is None:
    try:
      cached = _compile_for(tokenizer)
    except UserError as e:
      cached = e  # a template that does not decompose fails the same way every time
    with _LOCK:
      _CACHE[tokenizer] = cached
  if isinstance(cached, UserError):
    raise UserError(str(cached))
  return cached


def chat_format(tokenizer: Tokenizer) -> ChatFormat:
  return compiled_format(tokenizer).format


def end_of_turn_ids(tokenizer: Tokenizer) -> list[int]:
  """The ids that end an assistant turn (a generation stops at them)."""
  return [int(compiled_format(tokenizer).end_ids[-1])]


def end_of_turn_id(tokenizer: Tokenizer) -> int:
  return end_of_turn_ids(tokenizer)[0]


def render(conversation: list[dict], tokenizer: Tokenizer,
           generation_prompt: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(token ids int32[L], trained bool[L]): trained marks the tokens the model learns to
  produce, i.e. assistant contents and their end-of-turn tokens. `generation_prompt`
  appends the format's generation prompt, for sampling the next reply."""
  return render_compiled(compiled_format(tokenizer), tokenizer, conversation, generation_prompt)


def render_prompt(conversation: list[dict], tokenizer: Tokenizer) -> np.ndarray:
  """Token ids that ask the model for the next assistant turn of `conversation`."""
  return render(conversation, tokenizer, generation_prompt=True)[0]


def reply_ids(tokenizer: Tokenizer, replies: list[str]) -> list[np.ndarray]:
  """Each reply as an assistant turn writes it after `render_prompt`: its content and its
  end-of-turn tokens (the trained tokens of that turn)."""
  c = compiled_format(tokenizer)
  strip = "assistant" in c.format.strip
  contents = tokenizer.encode_batch([r.strip() if strip else r for r in replies])
  return [np.concatenate([np.asarray(ids, np.int32), c.end_ids]).astype(np.int32)
          for ids in contents]
