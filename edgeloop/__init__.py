"""The application on top of device and cloud: the ``edgeloop`` CLI, the demo and its report,
and the evaluation harness (NAB, Stanford wearables, WISDM activity data)."""
