"""gptjax-convert against transformers: the parity reached per family, and the host memory a
conversion holds.

    python -m benchmarks.hf_parity                       # parity table, tiny random models
    python -m benchmarks.hf_parity --memory=124m,774m    # + import/export of random GPT-2s

Parity: random tiny Hugging Face models (built here, nothing downloaded; the cases
tests/test_interop.py checks) are imported, and for each the largest |logit difference|
over 2 x 256 positions in float32, whether 32 greedy tokens agree, the same after export,
and whether import -> export gives back every tensor bit for bit. Memory: a random GPT-2 of
that size saved by transformers, imported and exported by `gptjax-convert` in a child
process each, whose peak resident memory is read from the kernel.
Writes benchmarks/results/hf_parity.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np

TOKENIZER_VOCAB = 280  # byte-level BPE: 256 bytes, merges, 3 special tokens
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA = dict(hidden_size=32, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=512, rms_norm_eps=1e-5)
GPT2_SIZES = {"124m": (12, 768, 12), "350m": (24, 1024, 16), "774m": (36, 1280, 20)}


def _rope_llama3(original):
  return {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": original}


def cases():
  """name -> a transformers config; vocabulary sizes that are multiples of nothing useful."""
  import transformers
  return {
      "gpt2": transformers.GPT2Config(vocab_size=301, n_positions=300, n_embd=32, n_layer=2,
                                      n_head=4),
      # one kv head, Llama 3.1's RoPE rescaling (its original context well inside the 256
      # positions compared), an untied head
      "llama_kv1": transformers.LlamaConfig(
          vocab_size=307, num_key_value_heads=1, tie_word_embeddings=False,
          rope_theta=500000.0, rope_scaling=_rope_llama3(64), **LLAMA),
      "llama_kv2": transformers.LlamaConfig(vocab_size=311, num_key_value_heads=2,
                                            tie_word_embeddings=False, **LLAMA),
      "llama_kv4_tied": transformers.LlamaConfig(vocab_size=293, num_key_value_heads=4,
                                                 tie_word_embeddings=True, **LLAMA),
      "mistral": transformers.MistralConfig(vocab_size=283, num_key_value_heads=2,
                                            sliding_window=None, **LLAMA),
      "qwen2": transformers.Qwen2Config(vocab_size=313, num_key_value_heads=2,
                                        tie_word_embeddings=True, **LLAMA),
  }


def text_lines() -> list[str]:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  text = ""
  for name in ("README.md", os.path.join("docs", "DESIGN.md")):
    with open(os.path.join(root, name)) as f:
      text += f.read()
  return [line for line in text.splitlines() if line.strip()]


def save_hf_tokenizer(folder, chat_template=None):
  """A byte-level BPE (GPT-2 / Llama 3 / Qwen2 style) saved as Hugging Face saves one."""
  import transformers
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
  trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=specials,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                show_progress=False)
  tok.train_from_iterator(text_lines(), trainer)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                              additional_special_tokens=specials[1:])
  if chat_template:
    fast.chat_template = chat_template
  fast.save_pretrained(folder)
  return fast


def randomize(model, seed):
  """Weights far from Hugging Face's init (std 0.02 makes every logit nearly equal, so a
  mistake would hide under the tolerance): norms around 1, biases and matrices O(0.3)."""
  import torch
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=gen)
      is_norm_scale = p.ndim == 1 and ("norm" in name or "ln_" in name) and "weight" in name
      p.copy_(1.0 + 0.2 * noise if is_norm_scale else 0.3 * noise)


def hf_logits(model, ids):
  """transformers' logits computed in float64: the reference, whatever float32 matmul mode
  PyTorch was left in (oneDNN may run float32 matmuls in reduced precision)."""
  import copy

  import torch
  with torch.no_grad():
    exact = copy.deepcopy(model).double()
    return exact(torch.tensor(ids, dtype=torch.long)).logits.numpy()


def _parity(name, hf_config, folder) -> dict:
  import jax
  import torch
  import transformers
  from safetensors.numpy import load_file
  from gptjax.generate import generate
  from gptjax.interop import convert
  from gptjax.load import load_workdir
  model = transformers.AutoModelForCausalLM.from_config(hf_config).eval()
  randomize(model, seed=len(name))
  model.save_pretrained(os.path.join(folder, "hf"))
  save_hf_tokenizer(os.path.join(folder, "hf"), CHATML if name == "qwen2" else None)
  convert.import_hf(os.path.join(folder, "hf"), os.path.join(folder, "w"))
  loaded = load_workdir(os.path.join(folder, "w"))
  ids = np.random.RandomState(0).randint(0, hf_config.vocab_size, (2, 256))
  theirs = hf_logits(model, ids)
  ours = np.asarray(loaded.model.apply({"params": loaded.params}, ids))
  prompt = ids[:1, :9]
  greedy = generate(loaded.model, loaded.params, prompt, 32, jax.random.key(0), 0.0,
                    valid_vocab=hf_config.vocab_size)
  with torch.no_grad():
    hf_greedy = model.generate(torch.tensor(prompt), max_new_tokens=32, min_new_tokens=32,
                               do_sample=False, pad_token_id=0)[0, 9:].numpy()
  out = os.path.join(folder, "out")
  summary = convert.export_hf(os.path.join(folder, "w"), out)
  exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  original = load_file(os.path.join(folder, "hf", "model.safetensors"))
  again = {}
  for file in summary["files"]:
    again.update(load_file(os.path.join(out, file)))
  return {"case": name, "family": summary["family"], "params": int(model.num_parameters()),
          "import_max_abs_logit_diff": float(np.abs(ours - theirs).max()),
          "logit_scale": float(np.abs(theirs).max()),
          "greedy_32_equal": bool(np.array_equal(greedy[0], hf_greedy)),
          "export_max_abs_logit_diff": float(np.abs(hf_logits(exported, ids) - ours).max()),
          "import_export_bit_exact": sorted(again) == sorted(original) and all(
              np.array_equal(again[k], v) for k, v in original.items())}


def _child_peak(args: list[str]) -> float:
  """Peak resident GiB of `python -m gptjax.interop.convert args`, as it reports its own
  (getrusage in the child: the kernel's high-water mark of its resident memory)."""
  out = subprocess.run([sys.executable, "-m", "gptjax.interop.convert", *args], check=True,
                       capture_output=True, text=True).stdout
  return float(re.search(r"host memory peak ([0-9.]+) GiB", out).group(1))


def _memory(size: str, folder: str) -> dict:
  import transformers
  from gptjax.data.tokenizers import CharTokenizer
  layers, width, heads = GPT2_SIZES[size]
  config = transformers.GPT2Config(vocab_size=50257, n_positions=1024, n_embd=width,
                                   n_layer=layers, n_head=heads)
  model = transformers.GPT2LMHeadModel(config)
  params = model.num_parameters()
  model.save_pretrained(os.path.join(folder, "hf"))
  del model
  tokenizer = os.path.join(folder, "char.json")
  with open(tokenizer, "w") as f:  # any tokenizer will do: only the weights are measured
    json.dump(CharTokenizer("".join(chr(32 + i) for i in range(95))).to_json(), f)
  w = os.path.join(folder, "w")
  import_peak = _child_peak([f"--from_hf={folder}/hf", f"--workdir={w}", f"--tokenizer={tokenizer}"])
  export_peak = _child_peak([f"--workdir={w}", f"--to_hf={folder}/out", "--max_shard_gb=1"])
  return {"size": size, "params": int(params), "float32_gib": params * 4 / 2**30,
          "import_peak_gib": import_peak, "export_peak_gib": export_peak}


def main(argv=None) -> None:
  from benchmarks.results_files import host_info, host_line, save
  parser = argparse.ArgumentParser()
  parser.add_argument("--memory", default="", help="GPT-2 sizes to convert, e.g. 124m,774m")
  args = parser.parse_args(argv)
  rows, memory = [], []
  for name, config in cases().items():
    with tempfile.TemporaryDirectory() as folder:
      rows.append(_parity(name, config, folder))
  for size in filter(None, args.memory.split(",")):
    with tempfile.TemporaryDirectory() as folder:
      memory.append(_memory(size, folder))
  lines = [f"Host: {host_line(host_info())}", "",
           "| case | family | max abs logit diff, import | export | logit scale | "
           "32 greedy tokens equal | import -> export bit-exact |", "|---|---|---|---|---|---|---|"]
  lines += [f"| {r['case']} | {r['family']} | {r['import_max_abs_logit_diff']:.1e} | "
            f"{r['export_max_abs_logit_diff']:.1e} | {r['logit_scale']:.1f} | "
            f"{r['greedy_32_equal']} | {r['import_export_bit_exact']} |" for r in rows]
  if memory:
    lines += ["", "| GPT-2 size | parameters | float32 GiB | import peak GiB | export peak GiB |",
              "|---|---|---|---|---|"]
    lines += [f"| {m['size']} | {m['params']:,} | {m['float32_gib']:.2f} | "
              f"{m['import_peak_gib']:.2f} | {m['export_peak_gib']:.2f} |" for m in memory]
  results = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
  save(results, "hf_parity", {"parity": rows, "memory": memory})
  with open(os.path.join(results, "hf_parity.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()
