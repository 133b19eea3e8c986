"""Data preparation: seeded synthetic phantoms and datalists (splits, challenge folder layouts)."""
