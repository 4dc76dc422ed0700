"""SAM 2 / SAM 2.1 in pure PyTorch: the model, image predictor and mask generator."""
