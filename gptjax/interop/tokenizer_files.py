"""A gptjax tokenizer as Hugging Face tokenizer files, and back.

`export_tokenizer` writes tokenizer.json (the `tokenizers` library's format, which
`AutoTokenizer` loads as PreTrainedTokenizerFast) and tokenizer_config.json (special tokens,
the chat template as Jinja). Every kind encodes text to the same ids in transformers as in
gptjax (tests/test_interop.py checks each):
  hf             its own tokenizer.json, as imported
  sentencepiece  gptjax's BPE (identity normalisation, no dummy prefix, whitespace-led words,
                 "\\n" a piece of its own, byte fallback) rebuilt as a `tokenizers` BPE: merges
                 ranked by the merged piece's id, as sentencepiece ranks them by score
  char           one id per character (a WordLevel model over single characters)
The chat control tokens a chat task appended become special added tokens at the same ids.
"""

from __future__ import annotations

import json
import os

from gptjax.data import chat_template
from gptjax.data.tokenizers import CharTokenizer, SentencePieceTokenizer, special_token_id
from gptjax.errors import UserError

SPACE = "\u2581"  # sentencepiece's whitespace symbol


def import_tokenizer(folder: str):
  from gptjax.data.hf_tokenizer import load_hf_folder
  return load_hf_folder(folder)


def _sentencepiece_backend(tok: SentencePieceTokenizer):
  from sentencepiece import sentencepiece_model_pb2 as pb
  from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
  from tokenizers import pre_tokenizers
  proto = pb.ModelProto()
  proto.ParseFromString(tok.model_proto)
  if proto.trainer_spec.model_type != pb.TrainerSpec.BPE:
    raise UserError("export handles gptjax's BPE sentencepiece tokenizers, not unigram ones")
  if proto.normalizer_spec.add_dummy_prefix or proto.normalizer_spec.name != "identity":
    raise UserError("this sentencepiece model normalises text in ways export does not "
                    "reproduce (dummy prefix or a normalisation rule)")
  vocab = {p.piece: i for i, p in enumerate(proto.pieces)}
  merges = []
  for piece, rank in vocab.items():  # every split of a piece into two pieces, by its rank
    local = [(vocab[piece[:k]], vocab[piece[k:]], piece[:k], piece[k:])
             for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
    merges += [(rank, left, right) for _, _, left, right in sorted(local)]
  unk = proto.pieces[proto.trainer_spec.unk_id].piece
  backend = Tokenizer(models.BPE(vocab=vocab, merges=[(l, r) for _, l, r in merges],
                                 unk_token=unk, fuse_unk=True,
                                 byte_fallback=proto.trainer_spec.byte_fallback))
  backend.normalizer = normalizers.Replace(" ", SPACE)
  # sentencepiece's words: a run of whitespace and the characters up to the next whitespace
  backend.pre_tokenizer = pre_tokenizers.Split(Regex(f"{SPACE}+[^{SPACE}]*|[^{SPACE}]+"),
                                               behavior="isolated")
  backend.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                       decoders.Fuse()])
  # Control pieces (<s>, </s>, <unk>) are special; user-defined ones ("\n") stay atomic.
  backend.add_tokens([AddedToken(p.piece, normalized=False, special=False)
                      for p in proto.pieces if p.type == pb.ModelProto.SentencePiece.USER_DEFINED])
  backend.add_special_tokens([AddedToken(p.piece, normalized=False, special=True)
                              for p in proto.pieces
                              if p.type in (pb.ModelProto.SentencePiece.CONTROL,
                                            pb.ModelProto.SentencePiece.UNKNOWN)])
  names = {"eos_token": proto.pieces[tok.eos_id].piece} if tok.eos_id is not None and tok.eos_id >= 0 else {}
  return backend, names


def _char_backend(tok: CharTokenizer):
  from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
  vocab = {c: i for i, c in enumerate(tok.chars)}
  unk = "<unk>" if "<unk>" not in vocab else "<unk_char>"
  backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
  backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
  backend.decoder = decoders.Fuse()
  return backend, {}


def _backend(tokenizer):
  """(tokenizers.Tokenizer of the base vocabulary, its special token names)."""
  from tokenizers import Tokenizer
  base = getattr(tokenizer, "base", tokenizer)
  if isinstance(base, SentencePieceTokenizer):
    return _sentencepiece_backend(base)
  if isinstance(base, CharTokenizer):
    return _char_backend(base)
  if hasattr(base, "tokenizer_json"):
    return Tokenizer.from_str(base.tokenizer_json), {
        k: v for k, v in base.settings.items() if k in ("bos_token", "eos_token", "pad_token")}
  raise UserError(f"export does not know tokenizer {type(base).__name__}")


def gptjax_chat_template() -> str:
  """The one chat template (gptjax.data.chat_template) in Jinja, for apply_chat_template."""
  roles = "".join(f"{{% {'if' if i == 0 else 'elif'} message['role'] == '{role}' %}}"
                  f"{{{{ '{token}' }}}}"
                  for i, (role, token) in enumerate(chat_template.ROLE_TOKENS.items()))
  return ("{% for message in messages %}" + roles + "{% endif %}"
          "{{ message['content'] }}{{ '" + chat_template.END + "' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '" + chat_template.ASSISTANT + "' }}{% endif %}")


def export_tokenizer(tokenizer, folder: str) -> dict:
  """Writes tokenizer.json and tokenizer_config.json; returns the ids generation needs:
  bos_token_id, eos_token_id, pad_token_id, end_of_turn_ids."""
  from tokenizers import AddedToken
  backend, names = _backend(tokenizer)
  if tokenizer.added_tokens:
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True)
                                for t in tokenizer.added_tokens])
  for name in tokenizer.added_tokens:  # appended tokens keep their gptjax ids
    if backend.token_to_id(name) != tokenizer.token_id(name):
      raise UserError(f"token {name} would get id {backend.token_to_id(name)} in the exported "
                      f"tokenizer but has {tokenizer.token_id(name)} in gptjax")
  if backend.get_vocab_size(with_added_tokens=True) != tokenizer.vocab_size:
    raise UserError("the exported tokenizer's vocabulary size differs from gptjax's "
                    f"({backend.get_vocab_size(with_added_tokens=True)} vs "
                    f"{tokenizer.vocab_size})")
  os.makedirs(folder, exist_ok=True)
  backend.save(os.path.join(folder, "tokenizer.json"))
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": False,
            "model_max_length": 1 << 30, **names}
  end_of_turn = []
  if special_token_id(tokenizer, chat_template.END) is not None:
    config["chat_template"] = gptjax_chat_template()
    end_of_turn = [special_token_id(tokenizer, chat_template.END)]
  elif getattr(tokenizer, "settings", {}).get("chat_template"):
    config["chat_template"] = tokenizer.settings["chat_template"]
  with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  token_id = lambda key: backend.token_to_id(names[key]) if key in names else None
  return {"bos_token_id": token_id("bos_token"), "eos_token_id": token_id("eos_token"),
          "pad_token_id": token_id("pad_token"), "end_of_turn_ids": end_of_turn}
