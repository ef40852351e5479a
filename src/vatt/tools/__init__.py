"""Tools built on the model: FLOP and parameter counting (flops)."""
