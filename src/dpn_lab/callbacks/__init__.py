"""Lightning callbacks of a training run: center initialisation, figures, pre-emption, RNG state, DDP checks."""
