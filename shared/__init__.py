"""edgeloop shared package."""
