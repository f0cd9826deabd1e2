"""Events and hooks: what PatchPilot tells the outside world, delivered through a queue, signed.

A worker never calls a webhook itself: it queues a delivery (publish.py) and goes on; the delivery
worker (delivery.py) POSTs it, retries with backoff, and records a dead letter when it gives up.
"""
