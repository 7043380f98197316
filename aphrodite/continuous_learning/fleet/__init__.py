"""Learning beyond one server: replicas sharing a PostgreSQL store, and adapters exported for a vLLM fleet."""
