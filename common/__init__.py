"""The method-agnostic core of the KD bundle collection: the distillation trainer, feature taps,
teacher loading, resuming, datalists, the distillation losses and learnable adapters.

Bundle configs reference it with ``"_target_": "common.<module>.<name>"``; code that serves one
bundle lives in that bundle's ``scripts/`` package instead (see ``docs/adding_a_method.md``).
"""

__version__ = "0.5.0"
