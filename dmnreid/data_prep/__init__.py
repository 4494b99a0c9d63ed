"""Dataset readers, tracklet sampling, per-camera partitioning and the synthetic network."""
