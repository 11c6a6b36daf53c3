"""English -> German translation on Multi30k, as a decoder-only LM trained from scratch.

Each sentence pair is a two-turn conversation (gptjax.data.parallel): the English source as
the user's turn, the German target as the assistant's, with the loss on the target only
(task.name=sft). Train and val (data.eval_path) from ../shared/data/multi30k; the BLEU
figure is on test_2016_flickr, which training never reads:

  gptjax-train --config=configs/translate_multi30k.py --workdir=runs/multi30k
  gptjax-eval --workdir=runs/multi30k --eval=bleu \
      --eval_options=path=../shared/data/multi30k/test_2016_flickr,beams=5,limit=0

  (none)  -> the CPU run: 4 layers, 256 wide, context 128, a 4000-piece joint BPE
  :gpu    -> 6 layers, 512 wide, longer
  :smoke  -> a seconds-long run on val, for tests
During training, greedy BLEU on the first 200 val sentences every eval.every steps (a curve).
"""

from gptjax.config import base_config

MULTI30K = "../shared/data/multi30k"


def get_config(arg=None):
  arg = arg or "cpu"
  if arg not in ("cpu", "gpu", "smoke"):
    raise ValueError(f"translate_multi30k.py takes cpu, gpu or smoke, got {arg!r}")
  c = base_config()
  c.task.name = "sft"
  c.data.path, c.data.eval_path = f"{MULTI30K}/train", f"{MULTI30K}/val"
  c.data.format, c.data.languages = "parallel", "en,de"
  c.data.packing = True
  c.data.seq_len = 128
  c.data.tokenizer.kind = "sentencepiece"
  c.data.tokenizer.vocab_size = 4000
  c.data.tokenizer.chat_tokens = True
  c.data.eval_batch_size = 32
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 4, 4, 256
  c.model.dropout = 0.1
  c.train.batch_size = 32
  c.train.steps = 1200  # 2.5 s/step on a 2-core CPU: 50 minutes, 4.6 epochs
  c.train.log_every = 50
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 1e-3, 1e-4, 200
  c.optim.b2, c.optim.weight_decay = 0.98, 0.1
  c.eval.every = c.checkpoint.every = 400
  c.eval.evaluators = "bleu"  # the curve: greedy, the first 200 val sentences
  c.evals.bleu.path, c.evals.bleu.languages = f"{MULTI30K}/val", "en,de"
  c.evals.bleu.beams, c.evals.bleu.limit, c.evals.bleu.n_bootstrap = 1, 200, 0
  if arg == "gpu":
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 6, 8, 512
    c.data.tokenizer.vocab_size = 8000
    c.train.batch_size, c.train.steps = 64, 10000
    c.eval.every = c.checkpoint.every = 1000
  elif arg == "smoke":  # plumbing only: trains on val (1,014 pairs) and holds out val too
    c.data.path = f"{MULTI30K}/val"
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 2, 32
    c.model.dropout = 0.0
    c.data.tokenizer.vocab_size = 600
    c.data.seq_len = 64
    c.train.steps, c.train.batch_size = 10, 8
    c.eval.every = c.checkpoint.every = 10
    c.eval.max_batches = 2
    c.optim.warmup_steps = 2
    c.train.progress = False
    c.evals.bleu.limit, c.evals.bleu.max_new_tokens = 8, 16
  return c
