"""GPT-2 small (124M) under the name the README and benchmarks use: configs/gpt2.py:124m.

  :smoke -> configs/gpt2.py:smoke, two steps on a CPU.
"""

from gptjax.config import sibling_config


def get_config(arg=None):
  return sibling_config(__file__, "gpt2.py", arg or "124m")
