"""edgeloop firmware_sim package."""
