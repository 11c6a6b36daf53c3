"""Chat fine-tuning (task.name=sft) on conversations, and the small base model it starts from.

  :pretrain -> the base: next-token pretraining on tiny Shakespeare with a 2048-piece BPE
               tokenizer that reserves the chat tokens (4 layers, 128 wide, context 256)
  :full     -> full fine-tuning of every parameter of init.workdir's model
  :lora     -> LoRA r=8, alpha 16 on the attention and MLP projections; the base is frozen
  :frozen   -> only the last two blocks train
  :scratch  -> :full from fresh weights (init.exclude='.*' keeps only the tokenizer)
  :smoke    -> a seconds-long run from scratch on CPU, for tests
  :hf       -> full fine-tuning of a model imported with gptjax-convert (init.workdir, default
               runs/hf): its architecture (init.architecture), its tokenizer and its own chat
               template (gptjax's control tokens are added where it has none)
  :hf_lora  -> the same with LoRA r=16 on every projection
(none) = :full. Data: --config.data.path (default ../shared/data/alpaca/alpaca_5000.json,
from the repository root) takes alpaca JSON, HH JSONL or OpenAI-messages JSONL; 5% of the
conversations are held out. --config.init.workdir (default runs/chat_pretrain) is the
pretrained run. The chain the README measures:

  gptjax-train --config=configs/sft.py:pretrain --workdir=runs/chat_pretrain
  gptjax-train --config=configs/sft.py:full --workdir=runs/sft_full   # and :lora, ...
"""

from gptjax.config import base_config

SHAKESPEARE = "../shared/data/tinyshakespeare/input.txt"
ALPACA = "../shared/data/alpaca/alpaca_5000.json"


def _model(c):
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 4, 4, 128
  c.data.seq_len = 256
  c.data.tokenizer.kind = "sentencepiece"
  c.data.tokenizer.vocab_size = 2048
  c.data.tokenizer.chat_tokens = True


def get_config(arg=None):
  c = base_config()
  arg = arg or "full"
  _model(c)
  c.train.batch_size = 16
  c.data.eval_batch_size = 32
  c.optim.weight_decay = 0.1
  c.optim.b2 = 0.99
  c.train.log_every = 25
  if arg == "pretrain":
    c.data.path = SHAKESPEARE
    c.data.dedup = False
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-3, 1e-4, 100
    c.train.steps = 1000
    c.eval.every = 250
    c.checkpoint.every = 500
    c.train.sample_prompt = "ROMEO:"
    return c
  variants = ("full", "lora", "frozen", "scratch", "smoke", "hf", "hf_lora")
  if arg not in variants:
    raise ValueError(f"sft.py takes pretrain or one of {variants}, got {arg!r}")
  c.task.name = "sft"
  c.data.path = ALPACA
  c.data.eval_fraction = 0.05
  c.data.packing = True
  c.init.workdir = "runs/chat_pretrain"
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 3e-4, 3e-5, 30
  c.train.steps = 400
  c.eval.every = 50
  c.checkpoint.every = 200
  if arg in ("hf", "hf_lora"):
    c.init.workdir, c.init.architecture = "runs/hf", True
    c.data.seq_len = 512
    c.optim.lr, c.optim.min_lr = 2e-5, 2e-6  # a pretrained model: small full fine-tuning steps
    c.optim.weight_decay = 0.0
    if arg == "hf_lora":
      c.lora.rank, c.lora.alpha = 16, 32.0
      c.optim.lr, c.optim.min_lr = 2e-4, 2e-5
  if arg == "lora":
    c.lora.rank, c.lora.alpha, c.lora.dropout = 8, 16.0, 0.0
    c.optim.lr, c.optim.min_lr = 1e-3, 1e-4  # adapters start at zero: a larger step, as peft
  elif arg == "frozen":
    c.train.trainable = r"^block_[23]/"  # the last two of four blocks
  elif arg == "scratch":
    c.init.exclude = ".*"  # the pretrained run's tokenizer, none of its weights
  elif arg == "smoke":
    c.init.workdir = ""
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 2, 32
    c.data.seq_len = 64
    c.data.tokenizer.vocab_size = 512
    c.data.max_chars = 0
    c.train.steps, c.train.batch_size = 10, 8
    c.eval.every = c.checkpoint.every = 10
    c.eval.max_batches = 2
    c.optim.lr, c.optim.warmup_steps = 1e-3, 2
    c.train.progress = False
  return c
