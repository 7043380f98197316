"""The store a configuration names: SQLite under the learning dir by default, PostgreSQL for a
``postgresql://`` URL (``--learning-store``)."""

from __future__ import annotations

from aphrodite.continuous_learning.config import ServerSideConfig
from aphrodite.continuous_learning.store.base import InteractionStore, StoreError


def create_store(config: ServerSideConfig) -> InteractionStore:
    """A new, unopened store for ``config``."""
    if config.store.startswith(("postgresql://", "postgres://")):
        try:
            from aphrodite.continuous_learning.store.postgres import PostgresInteractionStore
        except ImportError as exc:
            raise StoreError(f"--learning-store names PostgreSQL but psycopg is not installed ({exc}); install "
                             "it with: pip install 'aphrodite-echo[postgres]'") from None
        return PostgresInteractionStore(config.store, max_bytes=config.store_max_bytes)
    from aphrodite.continuous_learning.store.sqlite import SQLiteInteractionStore

    return SQLiteInteractionStore(config.store_path, max_bytes=config.store_max_bytes)
