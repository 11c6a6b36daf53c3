"""The complete config: every key the code reads, with its default and meaning.

Config files in `configs/` start from `base_config()` and override what they change, so a
typo in `--config.x.y` fails loudly (ConfigDict rejects unknown keys) and every key has one
documented home. `default_config()` is the embedded default that `gptjax-train` runs with
no `--config`: a small sentencepiece GPT on the Python standard library's own source files.
"""

import os

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0  # one seed for init, dropout and data order

  c.model = m = ml_collections.ConfigDict()
  m.vocab_size = 0  # 0 = take it from the tokenizer (rounded up to model.vocab_multiple)
  m.vocab_multiple = 1  # pad the embedding table to a multiple of this (128 on accelerators)
  m.num_layers = 4
  m.num_heads = 4
  m.num_kv_heads = 0  # grouped-query attention: 0 = num_heads (multi-head attention)
  m.embed_dim = 128
  m.mlp_dim = 0  # 0 = 4 * embed_dim (gelu) or the Llama 8/3 * embed_dim rounded to 256 (swiglu)
  m.max_len = 0  # position table size / longest context; 0 = data.seq_len
  m.dropout = 0.0
  m.use_bias = True  # biases in projections and norms (GPT-2); False for nanoGPT/Llama
  m.positions = "learned"  # "learned" (GPT-2) or "rope" (Llama)
  m.rope_theta = 10000.0
  # Llama 3.1's long-context RoPE ("llama3"): low frequencies divided by rope_factor, high
  # ones kept, a smooth blend between (Hugging Face rope_type "llama3"); "" = plain RoPE.
  m.rope_scaling = ""
  m.rope_factor = 8.0
  m.rope_low_freq_factor = 1.0
  m.rope_high_freq_factor = 4.0
  m.rope_original_max_len = 8192
  m.qkv_bias = False  # biases on the query/key/value projections only (Qwen2), with use_bias off
  m.norm = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama)
  m.norm_eps = 1e-5
  m.mlp = "gelu"  # "gelu" (GPT-2, tanh approximation), "gelu_exact" (erf) or "swiglu" (Llama)
  m.tie_embeddings = True  # output head shares the token embedding (GPT-2); False for Llama
  m.dtype = "float32"  # compute dtype: float32, bfloat16 (params stay float32)
  m.attention = "xla"  # attention kernel: xla, cudnn (GPU flash), splash (TPU flash) or auto
  m.remat = "none"  # rematerialisation per block: none, save_dots, full
  m.init_std = 0.02  # normal init std; residual projections scaled by 1/sqrt(2 * num_layers)
  m.score_head = False  # a scalar head on the last hidden state (reward models: task.name=reward)

  c.data = d = ml_collections.ConfigDict()
  d.path = ""  # local corpus: a text file, a folder, or a glob; "" = use data.tfds_name
  d.tfds_name = ""  # TFDS catalogue corpus (needs internet once), e.g. tiny_shakespeare, lm1b
  d.text_key = "text"  # feature holding the text in a TFDS catalogue corpus
  d.file_pattern = "*"  # when data.path is a folder: which files inside it (glob, recursive **)
  d.data_dir = ""  # where prepared array_record data and tokenizers live; "" = ~/.cache/gptjax
  d.eval_fraction = 0.1  # held-out split: the last fraction of characters of the corpus
  d.normalize = "NFC"  # unicode normalisation form, or "" for none
  d.dedup = True  # drop exact-duplicate documents
  d.max_chars = 0  # cap on corpus characters read (0 = all), for quick runs on big corpora
  # Counterfactual data augmentation: a swap list (WinoBias's generalized_swaps.txt) whose
  # two-sided swaps make a copy of the training split (he <-> she); held-out text is untouched
  d.counterfactual_swaps = ""
  d.seq_len = 64  # context length; windows of seq_len + 1 tokens are packed from the stream
  d.random_offset = False  # shift the window grid by a seeded random offset every epoch
  d.eval_batch_size = 64  # global sequences per eval batch
  d.worker_count = 0  # grain worker processes (0 = in the main process)
  d.prefetch = 2  # batches copied to the devices ahead of the step that uses them (0 = none)
  d.document_mask = False  # pretraining: attention stops at end-of-document tokens, positions
  #                          restart after them (needs a tokenizer with eos: sentencepiece)
  # Conversation data (task.name=sft): data.path is a file, folder or glob of conversations
  d.format = "auto"  # alpaca (JSON list), hh (Anthropic HH JSONL), messages (OpenAI JSONL), auto
  #                   or parallel: files data.path.SRC and data.path.TGT aligned by line
  d.languages = ""  # parallel: "SRC,TGT" file suffixes, e.g. "en,de" (source -> target)
  d.eval_path = ""  # held-out conversations from here instead of data.eval_fraction of data.path
  d.skip_bad_records = False  # skip malformed records (and report how many) instead of failing
  d.packing = True  # several conversations share one window (segment ids keep them apart)
  d.split_seed = 0  # which conversations are held out (data.eval_fraction of them)
  d.tokenizer = t = ml_collections.ConfigDict()
  t.kind = "sentencepiece"  # "sentencepiece" or "char"
  t.path = ""  # a trained tokenizer file to use; "" = train one from the corpus on first use
  t.vocab_size = 2048  # sentencepiece vocabulary size
  t.model_type = "bpe"  # sentencepiece model: bpe or unigram
  t.byte_fallback = True  # unknown characters become bytes, never <unk>
  t.max_sentences = 2_000_000  # sentencepiece input_sentence_size cap (lines sampled)
  t.chat_tokens = True  # a trained sentencepiece tokenizer reserves the chat control tokens

  c.optim = o = ml_collections.ConfigDict()
  o.lr = 1e-3  # peak learning rate
  o.min_lr = 1e-4  # end of the cosine decay
  o.warmup_steps = 100
  o.decay_steps = 0  # cosine length; 0 = train.steps
  o.b1 = 0.9
  o.b2 = 0.99
  o.eps = 1e-8
  o.weight_decay = 0.1  # on matrices and embeddings only (ndim >= 2)
  o.grad_clip = 1.0  # global-norm clipping; 0 = off

  c.train = tr = ml_collections.ConfigDict()
  tr.steps = 2000
  tr.batch_size = 12  # global, in sequences, per optimizer step
  tr.grad_accum = 1  # microbatches per step (batch_size must divide by it)
  tr.log_every = 50
  tr.profile_start = -1  # first step of a profiler trace (-1 = no trace)
  tr.profile_steps = 5  # how many steps the trace covers
  tr.distributed = False  # join a multi-host run (gptjax.distributed); also on by env
  tr.heartbeat_timeout = 100  # multi-host: seconds before the others give up on a dead process
  tr.cpu_devices = 0  # CPU-only hosts: JAX devices to split the cores into (0 = auto)
  tr.sample_prompt = ""  # printed after training: a sample continuing this ("" = none)
  tr.sample_tokens = 200  # length of that sample
  tr.progress = True  # tqdm progress bar
  # Fast-path switches (on by default; off only to measure what each one buys)
  tr.donate = True  # donate the train state to the step, so XLA updates it in place
  tr.async_metrics = True  # fetch a step's metrics after queueing the next (host never stalls)
  tr.xla_flags = "auto"  # "auto": gptjax.xla_flags' preset on GPU hosts; "none": XLA defaults
  # What trains, by regex over parameter paths like block_3/attn/wq, ln_f/norm/scale, wte
  tr.trainable = ""  # only parameters this matches ("" = all; with LoRA: only the adapters)
  tr.frozen = ""  # never parameters this matches, e.g. "^(wte|wpe)$" ("" = none)

  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1  # -1 = all devices left over after fsdp and tensor
  c.mesh.fsdp = 1
  c.mesh.tensor = 1

  c.checkpoint = ck = ml_collections.ConfigDict()
  ck.every = 500  # steps between checkpoints (and one at the end)
  # also one when this many minutes have passed since the last (0 = off), checked at each
  # train.log_every step by process 0's clock for all: the safety net against a preemption
  # whose notice is too short for a checkpoint (gptjax/checkpoint_cadence.py)
  ck.every_minutes = 0.0
  ck.keep = 2  # keep the newest N
  ck.keep_best = False  # also keep the checkpoint with the best eval/loss

  c.eval = ev = ml_collections.ConfigDict()
  ev.every = 250  # steps between whole-split held-out evaluations (and one at the end)
  ev.max_batches = 0  # cap on eval batches (0 = the whole split)
  ev.at_start = False  # also evaluate the starting weights (step 0) of a fresh run: "before"
  ev.evaluators = ""  # gptjax.evals registry names run at every evaluation ("a,b"; "" = none)

  c.evals = evs = ml_collections.ConfigDict()  # each evaluator's settings (gptjax/evals/)
  evs.crows_pairs = ml_collections.ConfigDict(
      {"path": "../shared/data/crows-pairs/crows_pairs_anonymized.csv", "batch_size": 32})
  evs.winobias = ml_collections.ConfigDict(  # {pro,anti}_stereotyped_type{1,2}.txt.dev
      {"path": "../shared/data/winobias", "batch_size": 32})
  evs.bleu = ml_collections.ConfigDict({  # translations of path.SRC scored against path.TGT
      "path": "../shared/data/multi30k/test_2016_flickr",
      "languages": "",  # "SRC,TGT" ("" = the run's data.languages)
      "beams": 5,  # 1 = greedy
      "length_penalty": 1.0,  # hypothesis score = sum log p / length ** this
      "max_new_tokens": 64,
      "batch_size": 32,
      "limit": 0,  # only the first N sentences (0 = all): a cheaper curve during training
      "n_bootstrap": 1000,  # resamples for the 95% interval (0 = none)
      "samples": 5})  # translations shown in the result file's table
  evs.multiple_choice = ml_collections.ConfigDict(  # {"context", "choices", "answer"} JSONL
      {"path": "", "separator": " ", "batch_size": 32})
  evs.exact_match = ml_collections.ConfigDict(  # {"prompt", "answer"} JSONL
      {"path": "", "max_new_tokens": 32, "batch_size": 32, "samples": 5})
  evs.human_export = ml_collections.ConfigDict({  # a blinded review pack for raters
      "path": "",  # {"prompt"} JSON lines
      "compare": "",  # another workdir: its outputs beside this model's (A/B)
      "kind": "likert",  # likert (1-5 fluency/coherence/relevance) or pairwise
      "limit": 0, "beams": 1, "max_new_tokens": 96, "batch_size": 32,
      "seed": 0,  # item order and A/B sides
      "out": ""})  # default W/review/step_N

  c.init = ini = ml_collections.ConfigDict()  # start from another run's weights
  ini.workdir = ""  # that run's workdir ("" = fresh init); its tokenizer is used too
  ini.step = 0  # which checkpoint (0 = its newest intact one)
  ini.exclude = ""  # regex of parameter paths not to load (they keep their fresh init)
  ini.architecture = False  # take model.* (layers, widths, RoPE, ...) from that checkpoint

  c.lora = lo = ml_collections.ConfigDict()  # low-rank adapters (gptjax.lora)
  lo.rank = 0  # 0 = no adapters
  lo.alpha = 16.0  # update scale alpha / rank
  lo.dropout = 0.0  # dropout on the adapters' input
  lo.targets = ""  # regex of weights to adapt ("" = attention and MLP projections)

  c.task = ml_collections.ConfigDict()
  c.task.name = "lm"  # objective, from gptjax.tasks.TASKS
  c.task.loss_chunk = 0  # positions per chunk of output layer + cross-entropy (0 = all at once)

  # Learning from feedback: data.path holds preference pairs (reward, dpo) or prompts (grpo)
  c.reward = rw = ml_collections.ConfigDict()  # task.name=reward: Bradley-Terry on pairs
  rw.margin = 0.0  # the chosen reward must beat the rejected one by this much
  rw.center_coef = 0.0  # penalty on (r_chosen + r_rejected)^2: keeps rewards centred on 0

  c.dpo = dp = ml_collections.ConfigDict()  # task.name=dpo (direct preference optimisation)
  dp.beta = 0.1  # strength of the leash to the reference policy
  dp.loss = "sigmoid"  # "sigmoid" (DPO) or "ipo" (squared loss on length-averaged log-ratios)
  dp.label_smoothing = 0.0  # conservative DPO: the share of pairs assumed mislabelled
  dp.reference_workdir = ""  # the frozen reference ("" = init.workdir; with LoRA: the base)
  dp.reference_step = 0  # its checkpoint (0 = the newest intact one)
  dp.precompute_reference = False  # score every pair with the reference once, before training,
  #                                  and hold no reference while training (TRL's option)

  c.grpo = g = ml_collections.ConfigDict()  # task.name=grpo: RL on rewards, KL to a reference
  g.group_size = 4  # completions sampled per prompt (train.batch_size counts completions)
  g.max_new_tokens = 64  # completion length cap (a completion stops at its end-of-turn token)
  g.temperature = 1.0  # sampling temperature (plain sampling: no top-k/top-p, so ratios hold)
  g.reward_workdir = ""  # a reward model's workdir (task.name=reward), or ...
  g.reward_step = 0
  g.reward_fn = ""  # ... a registered Python reward (gptjax.rewards.REWARDS), e.g. exact_match
  g.advantage = "grpo"  # "grpo" (group-normalised), "rloo" (leave-one-out), "dr_grpo" (no std)
  g.clip_eps = 0.2  # PPO clip range of the ratio
  g.kl_coef = 0.04  # weight of the KL penalty to the reference (0 = none, no reference held)
  g.kl_estimator = "k3"  # "k3" (unbiased, positive) or "k1" (log-ratio)
  g.reference_workdir = ""  # the frozen reference ("" = init.workdir; with LoRA: the base)
  g.reference_step = 0
  g.mask_truncated = False  # completions that never reached end of turn get no loss
  g.updates_per_rollout = 1  # optimizer steps on each rollout batch (ratio != 1 after the first)

  c.distill = ds = ml_collections.ConfigDict()  # task.name=distill: a frozen teacher
  ds.teacher_workdir = ""  # the teacher's workdir (same tokenizer as this run)
  ds.teacher_step = 0  # its checkpoint (0 = the newest intact one)
  ds.alpha = 0.5  # loss = (1 - alpha) * cross-entropy + alpha * divergence
  ds.temperature = 1.0  # both distributions softened by it; the divergence is scaled by T^2
  ds.divergence = "forward"  # "forward" KL(teacher||student), "reverse" KL(student||teacher), "jsd"
  ds.jsd_beta = 0.5  # generalised JSD's interpolation (0 -> forward KL, 1 -> reverse KL)
  return c


def planned_vocab_size(config) -> int:
  """The vocabulary a config will have without reading its corpus (planning, shape checks)."""
  from gptjax.errors import UserError
  if config.model.vocab_size:
    return config.model.vocab_size
  if config.data.tokenizer.kind == "char":
    raise UserError("a char tokenizer's vocabulary is known only from the corpus: set "
                    "--config.model.vocab_size (or pass --vocab_size to gptjax-plan)")
  return config.data.tokenizer.vocab_size


def sibling_config(config_file: str, name: str, arg=None) -> ml_collections.ConfigDict:
  """get_config(arg) of another file in the same folder: lets a config be another's alias."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), name)
  spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def stdlib_dir() -> str:
  """The running Python's standard-library folder: a real code corpus every machine has."""
  return os.path.dirname(os.__file__)


def default_config() -> ml_collections.ConfigDict:
  """Embedded default: a 4-layer GPT on the standard library's top-level .py files."""
  c = base_config()
  c.data.path = stdlib_dir()
  c.data.file_pattern = "*.py"
  c.data.seq_len = 128
  c.data.tokenizer.kind = "sentencepiece"
  c.data.tokenizer.vocab_size = 2048
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.embed_dim = 128
  c.optim.lr = 2e-3
  c.optim.min_lr = 2e-4
  c.train.steps = 600
  c.train.batch_size = 16
  c.train.log_every = 25
  c.eval.every = 200
  c.eval.max_batches = 20
  c.checkpoint.every = 200
  c.train.sample_prompt = "def "
  return c


def get_config(arg=None) -> ml_collections.ConfigDict:
  """Lets `gptjax-train` load this file as its default --config."""
  del arg
  return default_config()
