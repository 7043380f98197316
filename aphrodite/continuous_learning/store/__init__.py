"""Durable storage: the ``InteractionStore`` interface, its SQLite implementation, and the one writer thread
that runs every store call off the event loop."""
