"""The trained ``toy`` model's world: procedural shape videos with known ground truth, and metrics against it."""
