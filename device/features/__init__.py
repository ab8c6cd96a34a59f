"""Per-window features computed on the device."""
