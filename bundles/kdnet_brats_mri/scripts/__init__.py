"""Code of the KD-Net bundle alone, referenced from its configs as ``scripts.<module>.<name>``."""
