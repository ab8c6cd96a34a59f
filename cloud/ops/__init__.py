"""For operators: the broker's $SYS health, Prometheus metrics, the web dashboard, Home Assistant
discovery. Nothing here decides anything; it reads (cloud/store/read_model.py) and shows."""
