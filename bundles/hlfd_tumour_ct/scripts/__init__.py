"""Code of the HLFD bundle alone, referenced from its configs as ``scripts.<module>.<name>``."""
