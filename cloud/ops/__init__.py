"""For operators: the broker's $SYS health, Prometheus metrics, the web dashboard, Home Assistant
discovery. Nothing here decides anything; it reads (read_model) and shows."""
