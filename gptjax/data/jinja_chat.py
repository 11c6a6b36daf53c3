"""A Hugging Face Jinja chat template as a gptjax ChatFormat, and a ChatFormat as Jinja.

transformers renders a chat by running the template's Jinja over the whole conversation and
tokenizing the string. gptjax renders from a ChatFormat (fixed text around each content, each
content tokenized on its own): an exact trained mask, and no content forges a control token.
`derive` finds a tokenizer's format by rendering its template as transformers does (a
sandbox with trim_blocks, lstrip_blocks, raise_exception, strftime_now) on conversations
whose contents are sentinels, then checks that the format gives the template's text and
token ids on test conversations. A template it cannot decompose (one that writes dates or
turn numbers into turns, folds the system message into a user turn, reformats contents, or
whose text merges into tokens with a content) is refused, saying what to do. `to_jinja`
writes a format as a template that transformers renders to the same ids (export).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json

from gptjax.data import chat_template
from gptjax.data.chat_template import ChatFormat, Compiled
from gptjax.errors import UserError

FIX = ("re-import the model with gptjax-convert --chat_template=FILE naming a Jinja template "
       "that can, or --chat_template=gptjax to fine-tune with gptjax's own chat tokens")

_SYSTEM = {"role": "system", "content": "You are a helpful assistant. Answer briefly."}
_TURNS = [{"role": "user", "content": "Hello! Who are you?"},
          {"role": "assistant", "content": "I am a language model.\nHow can I help?"},
          {"role": "user", "content": "What is 2 + 2?"},
          {"role": "assistant", "content": "2 + 2 = 4."},
          {"role": "user", "content": "Thanks, bye."},
          {"role": "assistant", "content": "Goodbye!"}]
# (conversation, add_generation_prompt): multi-turn, with and without a system message
CHECKS = [([_SYSTEM, *_TURNS], False), ([_SYSTEM, *_TURNS[:3]], True), (_TURNS[:4], False),
          (_TURNS[:1], True), ([_SYSTEM, _TURNS[0]], True), (_TURNS[:5], True),
          (_TURNS[:2], False)]


class Problem(Exception):
  """Why a template does not decompose (the UserError adds what to do)."""


# ---- Jinja, as transformers runs it

@functools.lru_cache(maxsize=16)
def _compiled_template(template: str):
  import jinja2
  from jinja2 import ext, nodes
  from jinja2.sandbox import ImmutableSandboxedEnvironment

  class Generation(ext.Extension):
    """{% generation %}...{% endgeneration %} (assistant-mask marks): rendered as written."""
    tags = {"generation"}

    def parse(self, parser):
      lineno = next(parser.stream).lineno
      body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
      return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
      return caller()

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                      extensions=[Generation, ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  return env.from_string(template)


def render_template(template: str, messages: list[dict], add_generation_prompt: bool = False,
                    special_tokens: dict | None = None) -> str:
  """The template's text for `messages` (special_tokens: bos_token, eos_token, ...)."""
  return _compiled_template(template).render(
      messages=[dict(m) for m in messages], tools=None, documents=None,
      add_generation_prompt=add_generation_prompt, **(special_tokens or {}))


# ---- template -> format

def _sentinel(i: int) -> str:
  return f"Zq{i}xSENTINELx{i}qZ"


def _said(role: str, i: int) -> dict:
  return {"role": role, "content": _sentinel(i)}


def _split(text: str, count: int) -> list[str]:
  """The text between sentinels 0..count-1, which must each appear once, in order."""
  glue, start = [], 0
  for i in range(count):
    s = _sentinel(i)
    if text.count(s) != 1:
      raise Problem("it does not write each message's content once, as given (it reformats "
                    "or drops contents)")
    at = text.find(s, start)
    if at < 0:
      raise Problem("it writes the messages out of order")
    glue.append(text[start:at])
    start = at + len(s)
  return [*glue, text[start:]]


def _without_prefix(text: str, prefix: str, problem: str) -> str:
  if not text.startswith(prefix):
    raise Problem(problem)
  return text[len(prefix):]


def _end_of_turn(after: str, control_tokens: set[str]) -> str:
  """The assistant's text after its content up to and including its first control token."""
  found = [(after.find(t), -len(t), t) for t in control_tokens if t and t in after]
  if not found:
    raise Problem(f"an assistant turn ends with no special token (it writes {after!r} after "
                  "the content), so a reply could not stop at one")
  at, _, token = min(found)
  return after[:at + len(token)]


def _strip_roles(fmt: ChatFormat, render) -> ChatFormat:
  """Which roles' contents the template trims (Llama 3's and Gemma's `| trim`)."""
  padded, strip = f" \n {_sentinel(0)} \n", []
  for role in fmt.roles:
    message = {"role": role, "content": padded}
    user = {"role": "user", "content": _sentinel(1)}
    conversation = {"user": [message], "assistant": [user, message],
                    "system": [message, user]}[role]
    text = render(conversation)
    if text == fmt.text(conversation):
      continue
    if text != dataclasses.replace(fmt, strip=(*strip, role)).text(conversation):
      raise Problem(f"it changes a {role} message's content (the whitespace around it)")
    strip.append(role)
  return dataclasses.replace(fmt, strip=tuple(strip))


def _first_difference(a, b) -> int:
  return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _checks(fmt: ChatFormat) -> list:
  return [(c, p) for c, p in CHECKS if "system" in fmt.roles or c[0]["role"] != "system"]


def _verify_text(fmt: ChatFormat, render) -> None:
  for conversation, prompt in _checks(fmt):
    theirs, ours = render(conversation, prompt), fmt.text(conversation, prompt)
    if theirs != ours:
      k = _first_difference(theirs, ours)
      raise Problem(f"it writes {theirs[max(k - 30, 0):k + 30]!r} in a test conversation where "
                    f"fixed text around each message gives {ours[max(k - 30, 0):k + 30]!r} "
                    "(it may write dates or turn numbers into turns, or treat some turns "
                    "apart)")


def derive_format(template: str, special_tokens: dict, control_tokens: set[str]) -> ChatFormat:
  """The ChatFormat that writes the same text as `template` (raises Problem)."""
  def render(messages, prompt=False):
    try:
      return render_template(template, messages, prompt, special_tokens)
    except Exception as e:  # noqa: BLE001: Jinja's errors and the template's own
      raise Problem(f"it fails on a plain conversation ({type(e).__name__}: "
                    f"{str(e)[:120]})") from None

  g = _split(render([_said("user", 0), _said("assistant", 1), _said("user", 2),
                     _said("assistant", 3)]), 4)
  alone = render([_said("user", 0)])
  head_u, after_u = _split(alone, 1)
  if head_u != g[0]:
    raise Problem("the text before the first message depends on the messages after it")
  generation = _without_prefix(render([_said("user", 0)], True), alone,
                               "add_generation_prompt changes the text before the prompt")
  if g[1] != g[3]:
    raise Problem("it writes the boundary between a user and an assistant turn differently "
                  "in different turns")
  after_a = g[4]
  before_a = _without_prefix(g[1], after_u, "a user turn ends differently when an assistant "
                             "turn follows")
  before_u = _without_prefix(g[2], after_a, "an assistant turn ends differently when a user "
                             "turn follows")
  if not generation and before_a:  # Mistral's need none: a reply follows [/INST] directly
    raise Problem("add_generation_prompt adds nothing, so it cannot ask for a reply")
  if not g[0].endswith(before_u):
    raise Problem("the first user turn starts differently from the others")
  head = g[0][:len(g[0]) - len(before_u)]
  base = ChatFormat(roles={"user": (before_u, after_u), "assistant": (before_a, after_a)},
                    end_of_turn=_end_of_turn(after_a, control_tokens),
                    generation_prompt=generation, bos=head)
  try:
    candidates = [*_with_system(base, template, special_tokens), base]
  except Problem:  # no system role gptjax can write (Gemma refuses one, Mistral folds it in)
    candidates = [base]
  problems = []
  for fmt in candidates:
    try:
      fmt = _strip_roles(fmt, render)
      _verify_text(fmt, render)
      return fmt
    except Problem as p:
      problems.append(p)
  raise problems[0]


def _with_system(base: ChatFormat, template: str, special_tokens: dict) -> list[ChatFormat]:
  """`base` with a system role: with no default system turn, or with one (Qwen2's)."""
  try:
    text = render_template(template, [_said("system", 0), _said("user", 1),
                                      _said("assistant", 2)], False, special_tokens)
  except Exception:  # noqa: BLE001: the template refuses a system message
    raise Problem("no system role") from None
  h = _split(text, 3)
  before_u, head = base.roles["user"][0], base.bos
  if not h[1].endswith(before_u):
    raise Problem("a system message is not a turn of its own")
  after_s = h[1][:len(h[1]) - len(before_u)]
  candidates = []
  if h[0].startswith(head):  # a system turn only when the conversation has one
    candidates.append(dataclasses.replace(
        base, roles={"system": (h[0][len(head):], after_s), **base.roles}))
  if (head.startswith(h[0]) and head.endswith(after_s)
      and len(head) >= len(h[0]) + len(after_s)):  # else the template writes its own
    bos = special_tokens.get("bos_token") or ""
    bos = bos if h[0].startswith(bos) else ""
    candidates.append(dataclasses.replace(
        base, roles={"system": (h[0][len(bos):], after_s), **base.roles}, bos=bos,
        default_system=head[len(h[0]):len(head) - len(after_s)]))
  return candidates


def _verify_ids(compiled: Compiled, tokenizer, template: str, special_tokens: dict) -> None:
  checks = _checks(compiled.format)
  theirs = tokenizer.encode_template(
      [render_template(template, c, p, special_tokens) for c, p in checks])
  for (conversation, prompt), expected in zip(checks, theirs):
    ours = chat_template.render_compiled(compiled, tokenizer, conversation, prompt)[0].tolist()
    if ours != list(expected):
      k = _first_difference(expected, ours)
      show = lambda ids: [tokenizer.decode([i]) for i in ids[max(k - 2, 0):k + 3]]
      raise Problem(f"its text tokenizes as {show(expected)} where each content tokenized on "
                    f"its own gives {show(ours)} (text written next to a content merges with "
                    "it into tokens)")


def derive(tokenizer) -> Compiled:
  """The chat format of a Hugging Face tokenizer with a Jinja template, tokenized, checked
  to give the template's token ids; a UserError says why not and what to do."""
  template, names = tokenizer.chat_template, tokenizer.special_token_names()
  try:
    fmt = derive_format(template, names, tokenizer.special_tokens())
    compiled = chat_template.compile_format(fmt, tokenizer.encode_template)
    _verify_ids(compiled, tokenizer, template, names)
  except (Problem, UserError) as p:
    raise UserError(f"this model's chat template does not split into fixed text around each "
                    f"message, as gptjax renders chats: {p}; {FIX}") from None
  return compiled


# ---- format -> template

def _literal(text: str) -> str:
  """A Jinja string literal (Jinja reads JSON's escapes)."""
  return json.dumps(text, ensure_ascii=False)


def to_jinja(fmt: ChatFormat) -> str:
  """A Jinja chat template that writes `fmt`'s text (for tokenizer_config.json)."""
  say = lambda text: "{{ " + _literal(text) + " }}" if text else ""
  out = [say(fmt.bos)]
  if fmt.default_system is not None:
    turn = fmt.text([{"role": "system", "content": fmt.default_system}])[len(fmt.bos):]
    out.append("{% if not messages or messages[0]['role'] != 'system' %}" + say(turn)
               + "{% endif %}")
  out.append("{% for message in messages %}")
  for i, (role, (before, after)) in enumerate(fmt.roles.items()):
    content = "message['content'] | trim" if role in fmt.strip else "message['content']"
    out.append("{% " + ("elif" if i else "if") + " message['role'] == " + _literal(role)
               + " %}" + say(before) + "{{ " + content + " }}" + say(after))
  out.append("{% else %}{{ raise_exception('no chat role ' + message['role']) }}{% endif %}"
             "{% endfor %}")
  out.append("{% if add_generation_prompt %}" + say(fmt.generation_prompt) + "{% endif %}")
  return "".join(out)
