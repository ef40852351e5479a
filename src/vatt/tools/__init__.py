"""Tools built on the model: FLOP and parameter counting (flops), t-SNE figures (visualize),
embedding search (search)."""
