"""Code of the network-agnostic transfer bundle alone, referenced from its configs as ``scripts.<module>.<name>``."""
