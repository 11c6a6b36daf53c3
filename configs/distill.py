"""Knowledge distillation (task.name=distill) on character-level tiny Shakespeare.

  :teacher       -> the teacher: next-token pretraining, 6 layers, 6 heads, 192 wide (2.7M
                    parameters), context 128, batch 16, 600 steps, char tokenizer
  :student       -> 2 layers, 4 heads, 64 wide (0.11M), 600 steps of batch 16, distilled from
                    it: loss = 0.5 * cross-entropy + 0.5 * T^2 * KL(teacher || student), T = 2
  :baseline      -> the same student, same steps and data order, plain task.name=lm
  :smoke_teacher -> a seconds-long teacher on CPU, for tests ...
  :smoke         -> ... and a seconds-long student of it (distill.teacher_workdir must hold
                    a checkpoint: tests/test_distill.py trains :smoke_teacher first)
(none) = :student. Data: --config.data.path (default ../shared/data/tinyshakespeare/input.txt,
from the repository root); the last 10% of characters are held out. The student tokenizes
with the teacher's tokenizer (read from --config.distill.teacher_workdir, default
runs/distill_teacher). The chain, on a 2-core CPU about 5, 2.5 and 1 minutes; compare the
student's eval/ce (its plain cross-entropy) with the baseline's eval/loss:

  gptjax-train --config=configs/distill.py:teacher --workdir=runs/distill_teacher
  gptjax-train --config=configs/distill.py:student --workdir=runs/distill_student
  gptjax-train --config=configs/distill.py:baseline --workdir=runs/distill_baseline
"""

from gptjax.config import base_config

SHAKESPEARE = "../shared/data/tinyshakespeare/input.txt"
VARIANTS = ("teacher", "student", "baseline", "smoke_teacher", "smoke")


def get_config(arg=None):
  arg = arg or "student"
  if arg not in VARIANTS:
    raise ValueError(f"distill.py takes one of {VARIANTS}, got {arg!r}")
  c = base_config()
  c.data.path = SHAKESPEARE
  c.data.tokenizer.kind = "char"
  c.data.dedup = False  # one document: keep the split exact
  c.data.eval_fraction = 0.1
  c.model.use_bias = False
  c.optim.b2 = 0.99
  c.optim.weight_decay = 0.1
  c.train.log_every = 25
  if arg.startswith("smoke"):
    c.data.max_chars = 100_000
    c.data.seq_len = 32
    c.data.eval_batch_size = 16
    c.train.steps, c.train.batch_size = 10, 8
    c.eval.every = c.checkpoint.every = 10
    c.eval.max_batches = 2
    c.optim.lr, c.optim.warmup_steps = 3e-3, 2
    c.train.log_every = 5
    c.train.progress = False
    if arg == "smoke_teacher":
      c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 2, 32
    else:
      c.task.name = "distill"
      c.distill.teacher_workdir = "runs/distill_smoke_teacher"
      c.distill.temperature = 2.0
      c.model.num_layers, c.model.num_heads, c.model.embed_dim = 1, 2, 16
    return c
  c.data.seq_len = 128
  c.data.eval_batch_size = 64
  c.eval.every = 200
  c.train.sample_prompt = "\n"
  if arg == "teacher":
    c.model.num_layers, c.model.num_heads, c.model.embed_dim = 6, 6, 192
    c.train.steps, c.train.batch_size = 600, 16
    c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 2e-3, 2e-4, 50
    c.checkpoint.every = 600
    return c
  c.model.num_layers, c.model.num_heads, c.model.embed_dim = 2, 4, 64
  c.train.steps, c.train.batch_size = 600, 16
  c.optim.lr, c.optim.min_lr, c.optim.warmup_steps = 3e-3, 3e-4, 50
  c.checkpoint.every = 600
  if arg == "student":
    c.task.name = "distill"
    c.distill.teacher_workdir = "runs/distill_teacher"
    c.distill.alpha = 0.5
    c.distill.temperature = 2.0
    c.distill.divergence = "forward"
  return c
