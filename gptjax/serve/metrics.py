"""The server's Prometheus metrics, in a registry of their own (names as vLLM's, gptjax_*)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from 5 ms (a small model's decode step on an accelerator) to a minute.
LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24,
                   20.48, 40.96, 81.92)


class ServerMetrics:

  def __init__(self):
    self.registry = r = CollectorRegistry()
    self.requests = Counter("gptjax_requests", "HTTP requests by endpoint and status",
                            ["endpoint", "status"], registry=r)
    self.prompt_tokens = Counter("gptjax_prompt_tokens", "prompt tokens prefilled", registry=r)
    self.generated_tokens = Counter("gptjax_generation_tokens", "tokens generated", registry=r)
    self.time_to_first_token = Histogram(
        "gptjax_time_to_first_token_seconds", "request arrival to its first generated token",
        buckets=LATENCY_BUCKETS, registry=r)
    self.inter_token_latency = Histogram(
        "gptjax_inter_token_latency_seconds", "between consecutive tokens of one completion",
        buckets=LATENCY_BUCKETS, registry=r)
    self.queue_depth = Gauge("gptjax_queue_depth", "requests waiting for a decode slot",
                             registry=r)
    self.slots_in_use = Gauge("gptjax_slots_in_use", "decode slots holding a request",
                              registry=r)
    self.slots_total = Gauge("gptjax_slots_total", "decode slots", registry=r)
    self.open_connections = Gauge("gptjax_open_connections", "open HTTP connections",
                                  registry=r)
    self.refusals = Counter("gptjax_refusals", "connections refused or closed by a limit: "
                            "total, client (the caps), headers, body (the timeouts)",
                            ["reason"], registry=r)
    self.compilations = Gauge("gptjax_xla_compilations",
                              "XLA compilations of the engine's functions since start",
                              registry=r)

  def render(self) -> bytes:
    return generate_latest(self.registry)
