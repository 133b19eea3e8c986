"""Reproduction scripts of each bundle's published tables (``bash tools/reproduce/<name>.sh``) and the demos."""
