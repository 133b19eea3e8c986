"""Code of the MTMS contrastive KD bundle alone, referenced from its configs as ``scripts.<module>.<name>``."""
