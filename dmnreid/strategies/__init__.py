"""Server-side phase logic, each a small module over Flower's Grid."""
