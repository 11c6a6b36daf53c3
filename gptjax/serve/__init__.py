"""Serving: the continuous-batching engine, the OpenAI-compatible server, the terminal chat,
and the feedback log that feeds retraining."""
