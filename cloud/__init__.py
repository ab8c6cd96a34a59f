"""edgeloop cloud package."""
