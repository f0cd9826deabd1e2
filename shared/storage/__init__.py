"""Azure Storage: Table storage holds every durable fact; queues only carry work."""
