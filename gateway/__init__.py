"""The gateway agent: links -> security -> decode -> durable store -> batcher -> sinks."""
