"""The embedded default (what `gptjax-train` runs with no --config), as a config file.

A 4-layer GPT with a 2048-piece BPE sentencepiece tokenizer, trained on this Python's own
standard-library source files: a real code corpus every machine has, no download.
"""

from gptjax.config import default_config


def get_config(arg=None):
  del arg
  return default_config()
