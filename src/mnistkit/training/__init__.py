"""Training: a recipe resolved into a run, the loop, checkpoints, several processes."""
