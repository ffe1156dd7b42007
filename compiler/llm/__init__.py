"""Decoder LLMs: running an exported causal LM with its KV cache (generation, perplexity), checking
the export against transformers, and the weight-only compile pipeline."""
