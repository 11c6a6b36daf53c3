"""Hugging Face interop: checkpoint folders in and out (gptjax-convert), tokenizers, configs."""
