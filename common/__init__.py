"""Shared pieces of the KD bundle collection: losses, feature taps, teachers, trainer, data helpers.

Bundle configs reference them with ``"_target_": "common.<module>.<name>"``.
"""

__version__ = "0.1.0"
