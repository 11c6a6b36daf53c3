"""gptjax: GPT-style language models in JAX/Flax."""
