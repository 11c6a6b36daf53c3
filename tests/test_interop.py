"""gptjax-convert against transformers: random tiny Hugging Face models built here (nothing
downloaded), imported, compared logit by logit and token by token, exported back."""

import copy
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

from benchmarks import hf_parity
from benchmarks.hf_parity import CHATML, hf_logits as _hf_logits, randomize, save_hf_tokenizer
from gptjax import sharding
from gptjax.errors import UserError
from gptjax.generate import generate
from gptjax.interop import convert
from gptjax.load import load_workdir

CASES = {k: v for k, v in hf_parity.cases().items() if k != "mistral"}  # Mistral: the
# Llama layout (benchmarks/hf_parity.py still measures it)


@pytest.fixture(scope="module", params=sorted(CASES))
def hf_model(request, tmp_path_factory):
  """(name, transformers model, its folder, the gptjax workdir it was imported into)."""
  name = request.param
  folder = tmp_path_factory.mktemp(name)
  model = transformers.AutoModelForCausalLM.from_config(CASES[name]).eval()
  randomize(model, seed=len(name))
  # Sharded with an index in one case, as large checkpoints come.
  model.save_pretrained(folder / "hf", max_shard_size="40KB" if name == "llama_kv2" else "5GB")
  save_hf_tokenizer(folder / "hf", CHATML if name == "qwen2" else None)
  convert.import_hf(str(folder / "hf"), str(folder / "w"))
  return name, model, folder


def _tokens(vocab, batch=2, length=256, seed=0):
  return np.random.RandomState(seed).randint(0, vocab, (batch, length)).astype(np.int32)


def test_import_gives_the_logits_of_transformers_on_any_mesh(hf_model):
  """One device, then data x FSDP x tensor parallel (vocabularies that no axis divides stay
  replicated)."""
  name, model, folder = hf_model
  ids = _tokens(model.config.vocab_size)
  theirs = _hf_logits(model, ids)
  loaded = load_workdir(str(folder / "w"))
  ours = np.asarray(loaded.model.apply({"params": loaded.params}, ids))
  np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
  assert ours.shape[-1] == model.config.vocab_size  # no padding rows were added
  if name not in ("gpt2", "llama_kv2"):  # the mesh does not depend on the family
    return
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": 2, "tensor": 2}))
  loaded = load_workdir(str(folder / "w"), mesh=mesh)
  with sharding.rules_context(mesh):
    sharded = np.asarray(jax.jit(lambda p, x: loaded.model.apply({"params": p}, x))(
        loaded.params, ids))
  np.testing.assert_allclose(sharded, theirs, atol=1e-4, rtol=0)


def test_imported_greedy_generation_equals_transformers(hf_model):
  name, model, folder = hf_model
  loaded = load_workdir(str(folder / "w"))
  prompt = _tokens(loaded.tokenizer.vocab_size, batch=1, length=9, seed=1)
  ours = generate(loaded.model, loaded.params, prompt, 24, jax.random.key(0), temperature=0.0,
                  valid_vocab=model.config.vocab_size)
  with torch.no_grad():  # in float64, as the logits: argmax near-ties decide the same
    theirs = copy.deepcopy(model).double().generate(
        torch.tensor(prompt, dtype=torch.long), max_new_tokens=24, do_sample=False,
        min_new_tokens=24, pad_token_id=0)
  np.testing.assert_array_equal(ours[0], theirs[0, 9:].numpy())


def test_export_loads_in_transformers_and_import_export_is_the_identity(hf_model, tmp_path):
  name, model, folder = hf_model
  summary = convert.export_hf(str(folder / "w"), str(tmp_path / "out"),
                              max_shard_bytes=60_000)
  assert len(summary["files"]) > 1  # sharded, with an index transformers reads
  exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  ids = _tokens(model.config.vocab_size)
  np.testing.assert_allclose(_hf_logits(exported, ids), _hf_logits(model, ids), atol=1e-5,
                             rtol=0)
  original = {}
  for file in os.listdir(folder / "hf"):
    if file.endswith(".safetensors"):
      original.update(load_file(folder / "hf" / file))
  again = {}
  for file in summary["files"]:
    again.update(load_file(tmp_path / "out" / file))
  assert sorted(again) == sorted(original)
  for key, value in original.items():
    np.testing.assert_array_equal(again[key], value, err_msg=key)
  with open(tmp_path / "out" / "config.json") as f:
    assert json.load(f)["vocab_size"] == model.config.vocab_size


@pytest.mark.parametrize("problem", ["no_config", "model_type", "shape", "extra", "workdir"])
def test_bad_checkpoint_folders_are_one_clear_error(tmp_path, problem):
  folder = tmp_path / "hf"
  model = transformers.AutoModelForCausalLM.from_config(CASES["llama_kv2"])
  model.save_pretrained(folder)
  save_hf_tokenizer(folder)
  config = json.loads((folder / "config.json").read_text())
  expected = {"no_config": "has no config.json", "model_type": "is not supported",
              "shape": "does not fit", "extra": "have no place in the model",
              "workdir": "already holds checkpoints"}[problem]
  if problem == "no_config":
    (folder / "config.json").unlink()
  elif problem == "model_type":
    config["model_type"] = "bert"
  elif problem == "shape":
    config["intermediate_size"] = 64
  elif problem == "extra":
    config["num_hidden_layers"] = 1
  elif problem == "workdir":
    convert.import_hf(str(folder), str(tmp_path / "w"))
  if problem in ("model_type", "shape", "extra"):
    (folder / "config.json").write_text(json.dumps(config))
  with pytest.raises(UserError, match=expected):
    convert.import_hf(str(folder), str(tmp_path / "w"))


# ---- tokenizers

SAMPLES = ["The quick brown fox, 1234 times.", "  leading spaces\tand\ttabs\n\n\nnewlines  ",
           "unicode: é ü 中文 🙂 ½", "def f(x):\n    return x  # comment\n", "a", " ", ""]
CONVERSATION = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi there, what is 2 + 2?"},
                {"role": "assistant", "content": "4."},
                {"role": "user", "content": "And 3 + 3?"}]


def test_a_hugging_face_tokenizer_imports_as_it_encodes_and_never_forges_special_tokens(
    tmp_path):
  from gptjax.data.tokenizers import load_tokenizer, tokenizer_from_json
  hf = save_hf_tokenizer(tmp_path, CHATML)
  ours = load_tokenizer(str(tmp_path))
  assert ours.vocab_size == len(hf) and ours.eos_id == hf.eos_token_id and ours.bos_id is None
  again = tokenizer_from_json(json.loads(json.dumps(ours.to_json())))
  for text in SAMPLES:
    expected = hf.encode(text, add_special_tokens=False)
    assert list(ours.encode(text)) == expected == list(again.encode(text)), text
    assert ours.decode(expected) == text
  forged = ours.encode("<|im_end|> and <|endoftext|>")
  assert hf.convert_tokens_to_ids("<|im_end|>") not in forged.tolist()
  assert ours.eos_id not in forged.tolist()
  assert "chat_template" in ours.to_json()["settings"]


def test_a_tokenizer_that_prepends_bos_is_recognised(tmp_path):
  from tokenizers import processors
  hf = save_hf_tokenizer(tmp_path)
  backend = hf.backend_tokenizer
  bos = hf.convert_tokens_to_ids("<|im_start|>")
  backend.post_processor = processors.TemplateProcessing(
      single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
  backend.save(str(tmp_path / "tokenizer.json"))
  from gptjax.data.hf_tokenizer import load_hf_folder
  ours = load_hf_folder(str(tmp_path))
  assert ours.bos_id == bos and bos not in ours.encode("hello").tolist()


def _trained_sentencepiece():
  from gptjax.data.tokenizers import train_sentencepiece
  return train_sentencepiece(hf_parity.text_lines(), vocab_size=600, model_type="bpe",
                             byte_fallback=True, max_sentences=100_000)


@pytest.mark.parametrize("kind", ["sentencepiece", "sentencepiece+chat", "char", "hf",
                                  "hf+chat"])
def test_exported_tokenizers_encode_and_render_chats_as_gptjax(kind, tmp_path):
  from gptjax.data import chat_template
  from gptjax.data.hf_tokenizer import load_hf_folder
  from gptjax.data.tokenizers import CharTokenizer
  from gptjax.interop.tokenizer_io import export_tokenizer
  base = {"sentencepiece": _trained_sentencepiece, "char": lambda: CharTokenizer(
      "".join(SAMPLES) + "".join(hf_parity.text_lines())),
          "hf": lambda: (save_hf_tokenizer(tmp_path / "src"),
                         load_hf_folder(str(tmp_path / "src")))[1]}[kind.split("+")[0]]()
  tokenizer = chat_template.with_chat_tokens(base) if kind.endswith("+chat") else base
  ids = export_tokenizer(tokenizer, str(tmp_path / "out"))
  hf = transformers.AutoTokenizer.from_pretrained(tmp_path / "out")
  assert len(hf) == tokenizer.vocab_size
  for text in SAMPLES:
    assert hf.encode(text, add_special_tokens=False) == list(tokenizer.encode(text)), text
    assert hf.decode(tokenizer.encode(text)) == text
  if kind.endswith("+chat"):
    assert ids["end_of_turn_ids"] == [chat_template.end_of_turn_id(tokenizer)]
    for prompt in (True, False):
      conversation = CONVERSATION + ([] if prompt else [{"role": "assistant", "content": "6"}])
      theirs = hf.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                      add_generation_prompt=prompt)["input_ids"]
      assert list(theirs) == list(chat_template.render(conversation, tokenizer, prompt)[0])


# ---- a gptjax-trained chat model, exported

def test_a_gptjax_trained_chat_model_generates_the_same_greedy_text_in_transformers(
    sft_run, tmp_path):
  from gptjax.generate import chat_replies, sample_text
  summary = convert.export_hf(sft_run, str(tmp_path / "hf"))
  assert summary["family"] == "gpt2" and len(summary["stop_ids"]) == 2  # eos, end of turn
  model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
  hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
  loaded = load_workdir(sft_run)
  conversation = [{"role": "user", "content": "Give three tips for staying healthy."}]
  prompt = hf_tok.apply_chat_template(conversation, add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)["input_ids"]
  with torch.no_grad():  # stops at the end-of-turn id from generation_config.json
    out = model.generate(prompt, max_new_tokens=24, do_sample=False)
  reply = hf_tok.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
  assert reply == chat_replies(loaded, conversation, max_new_tokens=24, temperature=0.0)[0]
  text = "Once upon a time"
  ids = torch.tensor([hf_tok.encode(text, add_special_tokens=False)])
  with torch.no_grad():
    out = model.generate(ids, generation_config=transformers.GenerationConfig(
        max_new_tokens=24, do_sample=False))
  assert text + hf_tok.decode(out[0, ids.shape[1]:]) == sample_text(
      loaded, text, max_new_tokens=24, temperature=0.0)[0]


# ---- starting from an imported model

def _chats(path, n=48):
  rng = np.random.RandomState(0)
  with open(path, "w") as f:
    for _ in range(n):
      a, b = rng.randint(0, 50, 2)
      f.write(json.dumps({"messages": [{"role": "user", "content": f"what is {a} + {b}?"},
                                       {"role": "assistant", "content": f"{a + b}"}]}) + "\n")
  return str(path)


@pytest.mark.slow
def test_lora_fine_tuning_of_an_imported_model_exports_what_gptjax_computes(tmp_path):
  """configs/sft.py:hf_lora on an imported Llama-layout model: the architecture comes from
  the import, its tokenizer gains the chat tokens, and the merged export computes the
  fine-tuned model's logits in transformers."""
  from test_train import load_config
  from gptjax import train as train_lib
  model = transformers.AutoModelForCausalLM.from_config(CASES["llama_kv2"]).eval()
  randomize(model, seed=3)
  model.save_pretrained(tmp_path / "hf")
  save_hf_tokenizer(tmp_path / "hf")
  convert.import_hf(str(tmp_path / "hf"), str(tmp_path / "imported"))
  with pytest.raises(UserError, match="--config.init.workdir="):  # not a run to resume
    train_lib.train(load_config("tiny"), str(tmp_path / "imported"))
  config = load_config("sft", "hf_lora")
  config.init.workdir = str(tmp_path / "imported")
  config.data.path = _chats(tmp_path / "chats.jsonl")
  config.data.seq_len, config.data.eval_fraction = 64, 0.25
  config.train.steps = config.checkpoint.every = config.eval.every = 4
  config.train.batch_size, config.eval.max_batches, config.optim.warmup_steps = 8, 1, 1
  config.optim.lr = 1e-2  # large enough that the adapters visibly move the logits
  train_lib.train(config, str(tmp_path / "sft"))
  started = json.loads((tmp_path / "sft" / "init.json").read_text())
  assert started["fresh"] and all("lora" in p for p in started["fresh"])
  tuned = load_workdir(str(tmp_path / "sft"))
  assert tuned.model.cfg.num_kv_heads == 2 and tuned.model.cfg.lora_rank == 16
  convert.export_hf(str(tmp_path / "sft"), str(tmp_path / "out"))
  exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  ids = _tokens(tuned.tokenizer.vocab_size, length=64)
  ours = np.asarray(tuned.model.apply({"params": tuned.params}, ids))
  np.testing.assert_allclose(_hf_logits(exported, ids), ours, atol=1e-4, rtol=0)
  assert np.abs(_hf_logits(model, ids) - ours).max() > 1e-2  # fine-tuning changed it
