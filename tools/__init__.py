"""The collection's tools, grouped by job; each runs from the repository root as a module,
``python -m tools.<group>.<tool> --help``:

- ``tools.data``: synthetic phantoms and datalists of real data sets (split, BraTS, KiTS19/LiTS);
- ``tools.bundle``: bundle QA (the Model Zoo checks, the shared-block drift check), export for
  another site, MONAI Label (replica and real server);
- ``tools.measure``: benchmarks, model cost, result tables, figures and the collection report;
- ``tools.reproduce``: the scripts behind each bundle's published tables, and the demos.
"""
