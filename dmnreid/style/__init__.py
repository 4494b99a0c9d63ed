"""Per-camera style transfer (CycleGAN): nodes render their frames in the target camera's style."""
