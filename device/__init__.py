"""edgeloop device package."""
