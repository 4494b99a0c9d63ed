"""Re-ID network and its evaluation (Market-1501 / MARS ranking protocol)."""
