"""Evaluation beyond held-out loss: metrics (BLEU) and the evaluators built on them."""
