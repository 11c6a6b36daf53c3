"""A gptjax tokenizer as Hugging Face tokenizer files, and back.

`export_tokenizer` writes tokenizer.json (the `tokenizers` library's format, which
`AutoTokenizer` loads as PreTrainedTokenizerFast) and tokenizer_config.json (special tokens,
the chat format as a Jinja chat template). Every kind encodes text to the same ids in
transformers as in gptjax, and `apply_chat_template` gives `chat_template.render`'s ids:
  hf             its own tokenizer.json, as imported, and its own Jinja template
  sentencepiece  gptjax's BPE (identity normalisation, no dummy prefix, whitespace-led words,
                 "\\n" a piece of its own, byte fallback) rebuilt as a `tokenizers` BPE: merges
                 ranked by the merged piece's id, as sentencepiece ranks them by score
  char           one id per character (a WordLevel model over single characters)
The chat control tokens a chat task appended become special added tokens at the same ids,
and gptjax's chat format becomes Jinja (`jinja_chat.to_jinja`).
`import_tokenizer` reads a Hugging Face folder into the "hf" kind.
"""

from __future__ import annotations

import json
import os

from gptjax.data import chat_template as chat, jinja_chat
from gptjax.data.hf_tokenizer import KEEP_TEMPLATE, HFTokenizer, load_hf_folder
from gptjax.data.tokenizers import CharTokenizer, SentencePieceTokenizer, Tokenizer
from gptjax.errors import UserError, warn

SPACE = "\u2581"  # sentencepiece's whitespace symbol
NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


def import_tokenizer(hf_dir: str, chat_template: str | None = KEEP_TEMPLATE) -> HFTokenizer:
  """tokenizer.json with tokenizer_config.json's special tokens and chat template
  (chat_template.jinja wins); `chat_template` as `load_hf_folder`'s (a Jinja file replaces
  the folder's, "gptjax" drops it). A template gptjax cannot render is kept, with a
  warning: the model still serves completions, and chat fails with the reason."""
  tokenizer = load_hf_folder(hf_dir, chat_template)
  if tokenizer.chat_template:
    try:
      chat.compiled_format(tokenizer)
    except UserError as e:
      warn(str(e))
  return tokenizer


# ---- each kind's tokenizers.Tokenizer

def _sentencepiece_backend(tok: SentencePieceTokenizer):
  from sentencepiece import sentencepiece_model_pb2 as pb
  from tokenizers import AddedToken, Regex, Tokenizer as Backend, decoders, models
  from tokenizers import normalizers, pre_tokenizers
  proto = pb.ModelProto()
  proto.ParseFromString(tok.model_proto)
  if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
    raise UserError("export handles gptjax's BPE sentencepiece tokenizers, not unigram ones "
                    "(train with --config.data.tokenizer.model_type=bpe)")
  norm = proto.normalizer_spec
  if norm.add_dummy_prefix or norm.name != "identity" or norm.remove_extra_whitespaces:
    raise UserError("this sentencepiece model normalises text in ways export does not "
                    "reproduce (a dummy prefix, extra-whitespace removal or a normalisation "
                    "rule): export handles those gptjax trains")
  piece = pb.ModelProto.SentencePiece
  vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
  merges = []
  for merged, rank in vocab.items():  # every split of a piece into two pieces, by its rank
    splits = [(vocab[merged[:k]], vocab[merged[k:]], merged[:k], merged[k:])
              for k in range(1, len(merged)) if merged[:k] in vocab and merged[k:] in vocab]
    merges += [(rank, left, right) for _, _, left, right in sorted(splits)]
  unk = proto.pieces[proto.trainer_spec.unk_id].piece
  backend = Backend(models.BPE(vocab=vocab, merges=[(l, r) for _, l, r in merges],
                               unk_token=unk, fuse_unk=True,
                               byte_fallback=proto.trainer_spec.byte_fallback))
  backend.normalizer = normalizers.Replace(" ", SPACE)
  # sentencepiece's words: a run of whitespace and the characters up to the next whitespace
  # (Metaspace splits runs of spaces differently)
  backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"{SPACE}+[^{SPACE}]*|[^{SPACE}]+"),
                                               behavior="isolated")
  backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                       decoders.Fuse()])
  # Control pieces (<s>, </s>, <unk>) are special; user-defined ones ("\n") stay atomic.
  backend.add_tokens([AddedToken(p.piece, normalized=False, special=False)
                      for p in proto.pieces if p.type == piece.USER_DEFINED])
  backend.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                              for p in proto.pieces if p.type in (piece.CONTROL, piece.UNKNOWN)])
  names = {"unk_token": unk}
  if tok.eos_id is not None and tok.eos_id >= 0:
    names["eos_token"] = proto.pieces[tok.eos_id].piece
  return backend, names


def _char_backend(tok: CharTokenizer):
  from tokenizers import Regex, Tokenizer as Backend, decoders, models, pre_tokenizers
  vocab = {c: i for i, c in enumerate(tok.chars)}
  unk = "<unk>" if "<unk>" not in vocab else "<unk_char>"  # never in vocab: gptjax refuses too
  backend = Backend(models.WordLevel(vocab=vocab, unk_token=unk))
  backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
  backend.decoder = decoders.Fuse()
  return backend, {}


def _backend(tokenizer: Tokenizer):
  """(tokenizers.Tokenizer of the base vocabulary, its special token names)."""
  from tokenizers import Tokenizer as Backend
  base = getattr(tokenizer, "base", tokenizer)
  if isinstance(base, SentencePieceTokenizer):
    return _sentencepiece_backend(base)
  if isinstance(base, CharTokenizer):
    return _char_backend(base)
  if isinstance(base, HFTokenizer):
    return Backend.from_str(base.tokenizer_json), {k: base.settings[k] for k in NAMES
                                                    if base.settings.get(k)}
  raise UserError(f"export does not know tokenizer {type(base).__name__}")


# ---- export

def _chat(tokenizer: Tokenizer) -> tuple[str | None, list[int]]:
  """(Jinja chat template, ids that end an assistant turn)."""
  if chat.has_chat_tokens(tokenizer):
    fmt = chat.gptjax_format(tokenizer)
    return jinja_chat.to_jinja(fmt), chat.end_of_turn_ids(tokenizer)
  template = chat.own_template(tokenizer)
  if template is None:
    return None, []
  try:  # the model's own template, as it came: transformers renders it as before
    return template, chat.end_of_turn_ids(tokenizer)
  except UserError as e:
    warn(f"{e} (exported as it came, with no end-of-turn ids)")
    return template, []


def export_tokenizer(tokenizer: Tokenizer, out_dir: str) -> dict:
  """Writes tokenizer.json and tokenizer_config.json into `out_dir`; returns the ids
  generation needs: bos_token_id, eos_token_id, pad_token_id (each None where absent) and
  end_of_turn_ids (for generation_config.json's eos_token_id list)."""
  from tokenizers import AddedToken
  backend, names = _backend(tokenizer)
  if tokenizer.added_tokens:
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t in tokenizer.added_tokens])
  for name in tokenizer.added_tokens:  # appended tokens keep their gptjax ids
    if backend.token_to_id(name) != tokenizer.token_id(name):
      raise UserError(f"token {name} would get id {backend.token_to_id(name)} in the exported "
                      f"tokenizer but has {tokenizer.token_id(name)} in gptjax (the base "
                      "vocabulary already spells it)")
  vocab = backend.get_vocab(with_added_tokens=True)
  if max(vocab.values()) + 1 != tokenizer.vocab_size:
    raise UserError("the exported tokenizer's vocabulary size differs from gptjax's "
                    f"({max(vocab.values()) + 1} vs {tokenizer.vocab_size})")
  template, end_of_turn = _chat(tokenizer)
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
            "model_max_length": 1 << 30, **names}
  settings = getattr(getattr(tokenizer, "base", tokenizer), "settings", {})
  if "add_bos_token" in settings:  # transformers rebuilds the post-processor from it
    config["add_bos_token"] = settings["add_bos_token"]
  if template:
    config["chat_template"] = template
  os.makedirs(out_dir, exist_ok=True)
  backend.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  token_id = lambda key: backend.token_to_id(names[key]) if key in names else None
  bos = token_id("bos_token")
  return {"bos_token_id": bos if bos is not None else getattr(tokenizer, "bos_id", None),
          "eos_token_id": token_id("eos_token"), "pad_token_id": token_id("pad_token"),
          "end_of_turn_ids": end_of_turn}
