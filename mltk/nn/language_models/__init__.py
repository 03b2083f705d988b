"""Causal language models: loading, saving and checking them."""
