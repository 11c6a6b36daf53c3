"""gptjax-convert: Hugging Face checkpoint folders in and out.

    gptjax-convert --from_hf=DIR --workdir=W     # import: W becomes a gptjax run folder
    gptjax-convert --workdir=W --to_hf=DIR       # export: DIR loads with from_pretrained

Import writes an ordinary checkpoint (step 0: the parameters, the run config, the model's own
tokenizer and chat template) that gptjax-eval, gptjax-sample, gptjax-chat, gptjax-serve read
as they are and that a fine-tuning run starts from with --config.init.workdir=W. Export writes
safetensors, config.json, generation_config.json (the end-of-turn token among the stop ids)
and the tokenizer files with the chat template; LoRA adapters are merged first.

Memory: both directions go one tensor at a time. Import reads one source tensor, converts
it to float32 and places it on the devices (sharded over all of them) before the next; the
host holds the parameters once in float32 only when the devices are the host's (CPU).
Export holds one output shard (--max_shard_gb) beside the parameters.
"""

from __future__ import annotations

import json
import os
import resource

import jax
import ml_collections
import numpy as np

from gptjax import checkpoint, lora, sharding, state as state_lib
from gptjax.config import base_config
from gptjax.errors import UserError
from gptjax.data.hf_tokenizer import KEEP_TEMPLATE
from gptjax.interop import families, hf_config, tokenizer_io
from gptjax.interop.safetensors_dir import Reader, ShardedWriter
from gptjax.model import GPT, GPTConfig
from gptjax.trainable import path_of

IMPORTED_STEP = 0
DTYPES = ("float32", "bfloat16", "float16")


def _flags(cfg: GPTConfig) -> set[str]:
  return {name for name, on in (("untied", not cfg.tie_embeddings), ("bias", cfg.use_bias),
                                ("qkv_bias", cfg.qkv_bias or cfg.use_bias)) if on}


def run_config(settings: dict) -> ml_collections.ConfigDict:
  """The run config of an imported model: base settings, the model's shape, float32."""
  config = base_config()
  config.model.update(settings)
  config.model.vocab_multiple = 1  # the table keeps exactly the checkpoint's rows
  config.model.dtype, config.model.attention, config.model.dropout = "float32", "xla", 0.0
  config.data.seq_len = min(settings["max_len"], 1024)
  config.data.tokenizer.vocab_size = 0  # the checkpoint's tokenizer is the model's own
  config.mesh.data, config.mesh.fsdp, config.mesh.tensor = -1, 1, 1
  config.train.steps = 0
  return config


def _hf_names(reader: Reader, family: str) -> dict[str, str]:
  """Canonical name -> name in the files: GPT-2 checkpoints from the Hub drop the
  'transformer.' prefix that GPT2LMHeadModel.save_pretrained writes."""
  names = {}
  for name in reader.names():
    canonical = name
    if family == "gpt2" and not name.startswith(("transformer.", "lm_head.")):
      canonical = "transformer." + name
    names[canonical] = name
  return names


def _check_headers(hf_dir: str, family: str, cfg: GPTConfig, reader: Reader,
                   names: dict[str, str]) -> list[families.Rule]:
  """The rules that place `hf_dir`'s tensors, once config.json is found to describe them:
  every tensor the model needs is there with the shape the config gives it, and none is
  left over. Shapes come from the safetensors headers, so a config.json that asks for more
  than the files hold (a billion positions, 100,000 layers) is refused in milliseconds
  instead of building that model first."""
  layers = families.layers_in(family, names)
  if cfg.num_layers > len(layers):
    field = hf_config.layers_field(family)
    raise UserError(f"config.json {field}={cfg.num_layers} but the tensors of {hf_dir} hold "
                    f"{len(layers)} layers: config.json does not describe this checkpoint")
  rules, dims = families.rules_for(family, cfg.num_layers, _flags(cfg)), families.hf_dims(cfg)
  for rule in rules:
    if rule.hf not in names:
      raise UserError(f"{hf_dir} lacks tensor {rule.hf} that a {family} model with this "
                      "config.json has: the checkpoint is incomplete or of another model")
    found, expected = reader.shape(names[rule.hf]), rule.hf_shape(dims)
    if found != expected:
      raise UserError(f"tensor {rule.hf} of shape {found} does not fit config.json, which "
                      f"gives it {expected}: config.json does not describe this checkpoint")
  used = {rule.hf for rule in rules}
  left = [n for n in names if n not in used and not n.endswith(families.IGNORED_SUFFIXES)
          and not (n == "lm_head.weight" and cfg.tie_embeddings)]
  if left:
    raise UserError(f"{len(left)} tensor(s) of {hf_dir} have no place in the model, first "
                    f"{left[0]}: config.json does not describe this checkpoint")
  return rules


def import_hf(hf_dir: str, workdir: str, tokenizer=None,
              chat_template: str | None = KEEP_TEMPLATE) -> dict:
  """Writes `hf_dir`'s model as checkpoint step 0 of `workdir`; returns a summary.
  `chat_template`: the folder's own (default), a Jinja file's, or "gptjax" (none: a chat
  fine-tune then adds gptjax's chat tokens)."""
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.exists(config_path):
    raise UserError(f"--from_hf={hf_dir} has no config.json: point it at a Hugging Face "
                    "checkpoint folder (config.json, *.safetensors, tokenizer files)")
  ckpt_dir = checkpoint.checkpoint_dir(workdir)
  if os.path.isdir(ckpt_dir) and os.listdir(ckpt_dir):
    raise UserError(f"--workdir={workdir} already holds checkpoints: import into a new folder")
  hf = hf_config.read(config_path)
  family = hf_config.family_of(hf)
  config = run_config(hf_config.model_settings(hf))
  cfg = GPTConfig.from_config(config, 0)  # the vocabulary is config.json's
  reader = Reader(hf_dir)
  names = _hf_names(reader, family)
  rules = _check_headers(hf_dir, family, cfg, reader, names)  # before building anything
  if tokenizer is None:
    tokenizer = tokenizer_io.import_tokenizer(hf_dir, chat_template)
  if tokenizer.vocab_size > cfg.vocab_size:
    raise UserError(f"the tokenizer has {tokenizer.vocab_size} ids but config.json "
                    f"vocab_size={cfg.vocab_size}: the checkpoint and its tokenizer disagree")
  mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1}))
  abstract, shardings = state_lib.abstract_params(GPT(cfg), mesh, replicate_indivisible=True)
  flat_abstract = {path_of(p): x for p, x in jax.tree_util.tree_leaves_with_path(abstract)}
  flat_shardings = {path_of(p): s for p, s in jax.tree_util.tree_leaves_with_path(shardings)}

  placed = {}
  for rule in rules:
    source = reader.get(names[rule.hf])
    shapes = [flat_abstract[o].shape for o in rule.ours]
    try:
      arrays = rule.layout.to_ours(np.asarray(source, np.float32), shapes)
    except ValueError as e:
      raise UserError(f"tensor {rule.hf} of shape {tuple(source.shape)} does not fit "
                      f"{list(rule.ours)} {shapes}: config.json does not describe it") from e
    for path, array in zip(rule.ours, arrays):
      placed[path] = jax.device_put(array, flat_shardings[path])
    del source, arrays
  params = jax.tree_util.tree_map_with_path(lambda p, _: placed[path_of(p)], abstract)

  ckpt = checkpoint.Checkpointer(workdir, keep=1)
  try:
    ckpt.save(IMPORTED_STEP, {"params": params}, {}, json.loads(config.to_json_best_effort()),
              tokenizer.to_json())
    ckpt.wait()
  finally:
    ckpt.close()
  summary = {"family": family, "source": os.path.abspath(hf_dir),
             "params": int(sum(x.size for x in flat_abstract.values())),
             "tokenizer_vocab": int(tokenizer.vocab_size), "model_vocab": cfg.vocab_size,
             "max_len": cfg.max_len, "host_peak_gib": host_peak_gib()}
  with open(os.path.join(workdir, checkpoint.IMPORTED_MARKER), "w") as f:
    json.dump(summary, f, indent=2)
  return summary


def host_peak_gib() -> float:
  """This process's peak resident memory so far (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _vocab_cut(path: str, array: np.ndarray, vocab: int) -> np.ndarray:
  """The embedding rows (head columns) of the table the model was given: the rows gptjax
  padded it with (model.vocab_multiple, the tensor axis) are never produced by gptjax's
  sampler, but a Hugging Face model would sample them."""
  if path == "wte":
    return array[:vocab]
  if path == "lm_head":
    return array[:, :vocab]
  return array


def export_hf(workdir: str, out_dir: str, step: int | None = None, dtype: str = "float32",
              max_shard_bytes: int = 5 * 2**30) -> dict:
  """Writes `workdir`'s checkpoint as a Hugging Face folder `out_dir`; returns a summary."""
  import ml_dtypes

  from gptjax.load import load_workdir
  if dtype not in DTYPES:
    raise UserError(f"--dtype={dtype}: use one of {DTYPES}")
  loaded = load_workdir(workdir, step)
  cfg, params = loaded.model.cfg, loaded.params
  if cfg.score_head:
    raise UserError(f"--workdir={workdir} is a reward model (model.score_head): its scalar "
                    "head has no place in a causal language model; export its SFT run instead")
  if cfg.lora_rank:
    params = jax.jit(lambda p: lora.merge(p, cfg))(params)
  family = hf_config.family_for(cfg)
  # An imported table keeps every row it came with (Qwen2's has spare ones); a table sized
  # by the tokenizer loses its padding.
  vocab = max(loaded.config.model.vocab_size, loaded.tokenizer.vocab_size)
  np_dtype = {"float32": np.float32, "bfloat16": ml_dtypes.bfloat16,
              "float16": np.float16}[dtype]
  flat = {path_of(p): x for p, x in jax.tree_util.tree_leaves_with_path(params)}
  flat = {p: x for p, x in flat.items() if not lora.is_adapter(p)}
  writer = ShardedWriter(out_dir, max_shard_bytes)
  wrote, flags = {}, _flags(cfg)
  for rule in families.rules_for(family, cfg.num_layers, flags | {"bias", "qkv_bias"}):
    if all(o in flat for o in rule.ours):
      ours = [_vocab_cut(o, np.asarray(jax.device_get(flat[o])), vocab) for o in rule.ours]
      array = rule.layout.to_hf(ours)
    elif rule.when in ("bias", "qkv_bias"):
      # A model without biases is the same model with zero biases (GPT-2 always has them).
      weight = wrote.get(rule.hf[:-len("bias")] + "weight")
      if weight is None or family != "gpt2":
        continue
      array = np.zeros(weight[-1:], np.float32)
    else:
      continue
    writer.add(rule.hf, array.astype(np_dtype))
    wrote[rule.hf] = array.shape
  files = writer.close()
  ids = tokenizer_io.export_tokenizer(loaded.tokenizer, out_dir)
  config_json = hf_config.hf_config_for(cfg, family, vocab, ids, dtype)
  stops = [ids.get("eos_token_id"), *ids.get("end_of_turn_ids", [])]
  stops = list(dict.fromkeys(i for i in stops if i is not None))
  generation = {"bos_token_id": ids.get("bos_token_id"), "pad_token_id": ids.get("pad_token_id"),
                "eos_token_id": stops[0] if len(stops) == 1 else stops or None}
  for name, content in (("config.json", config_json), ("generation_config.json", generation)):
    with open(os.path.join(out_dir, name), "w") as f:
      json.dump(content, f, indent=2)
  return {"family": family, "step": loaded.step, "files": files, "tensors": len(wrote),
          "bytes": writer.total_bytes, "vocab": vocab, "stop_ids": stops,
          "host_peak_gib": host_peak_gib()}


def main(argv=None) -> None:
  from absl import flags

  from gptjax.errors import run_app, run_cli

  flags.DEFINE_string("workdir", None, "gptjax run folder (import: created; export: read)",
                      required=True)
  flags.DEFINE_string("from_hf", None, "import this Hugging Face checkpoint folder")
  flags.DEFINE_string("to_hf", None, "export to this folder")
  flags.DEFINE_integer("step", None, "export: checkpoint step (default: newest)")
  flags.DEFINE_enum("dtype", "float32", list(DTYPES), "export: tensor dtype")
  flags.DEFINE_float("max_shard_gb", 5.0, "export: largest safetensors shard, GiB")
  flags.DEFINE_string("tokenizer", None, "import: a gptjax tokenizer (JSON or sentencepiece "
                      ".model) instead of the folder's own")
  flags.DEFINE_string("chat_template", None, "import: a Jinja chat template file to use "
                      "instead of the folder's, or 'gptjax' for none (chat fine-tuning then "
                      "adds gptjax's chat tokens)")
  FLAGS = flags.FLAGS

  def _main(_):
    def body():
      if bool(FLAGS.from_hf) == bool(FLAGS.to_hf):
        raise UserError("give exactly one of --from_hf=DIR (import) or --to_hf=DIR (export)")
      if FLAGS.to_hf and FLAGS.chat_template:
        raise UserError("--chat_template is an import setting (with --from_hf)")
      if FLAGS.from_hf:
        tokenizer = None
        if FLAGS.tokenizer:
          from gptjax.data.tokenizers import load_tokenizer
          tokenizer = load_tokenizer(FLAGS.tokenizer)
        if FLAGS.tokenizer and FLAGS.chat_template:
          raise UserError("--chat_template applies to the folder's tokenizer, not to "
                          "--tokenizer: give one of them")
        summary = import_hf(FLAGS.from_hf, FLAGS.workdir, tokenizer,
                            FLAGS.chat_template or KEEP_TEMPLATE)
        print(f"imported a {summary['family']} model of {summary['params']:,} parameters "
              f"into {FLAGS.workdir} (checkpoint step {IMPORTED_STEP}); host memory peak "
              f"{summary['host_peak_gib']:.2f} GiB")
      else:
        if os.path.isdir(FLAGS.to_hf) and os.listdir(FLAGS.to_hf):
          raise UserError(f"--to_hf={FLAGS.to_hf} is not empty: export into a new folder")
        summary = export_hf(FLAGS.workdir, FLAGS.to_hf, FLAGS.step, FLAGS.dtype,
                            int(FLAGS.max_shard_gb * 2**30))
        print(f"exported step {summary['step']} as {summary['family']} to {FLAGS.to_hf}: "
              f"{summary['tensors']} tensors in {len(summary['files'])} file(s), "
              f"{summary['bytes'] / 2**30:.2f} GiB; stop ids {summary['stop_ids']}; host "
              f"memory peak {summary['host_peak_gib']:.2f} GiB")
    run_cli(body)

  run_app(_main, argv)


if __name__ == "__main__":
  main()
