"""Queue port: small JSON messages, an in-memory queue and Azure Storage Queues (Azurite locally)."""
