"""Training: KD co-training, losses, patch sampling, scene-adaptive training and its data."""
