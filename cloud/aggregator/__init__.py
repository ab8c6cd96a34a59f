"""Cloud aggregator: subscribe, validate, store idempotently, decide, acknowledge."""
