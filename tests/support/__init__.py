"""What many test files share: request bodies (bodies), simulator configurations (fleet), the webhook receiver
(events), the compliance oracle (compliance) and infra's role actions (roles). The fixtures built on them
(`host`, `host_settings`, `receiver`) are in tests/integration/conftest.py."""
