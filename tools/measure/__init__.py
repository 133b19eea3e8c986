"""Measurement and reports: KD cost benchmarks, model cost, result tables, figures, the collection report."""
