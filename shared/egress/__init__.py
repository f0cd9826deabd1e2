"""Outbound calls that are not ARM (event webhooks, pre- and post-run hooks): what they may reach.

policy.py says which addresses and URLs are allowed (pure, no DNS); session.py is the one requests
session that applies the address policy at connect time, with a deadline per call.
"""

from shared.egress.policy import check_url, is_loopback_name, literal_address, refusal
from shared.egress.session import AddressRefusedError, Answer, EgressRefusedError, EgressSession, post

__all__ = ["AddressRefusedError", "Answer", "EgressRefusedError", "EgressSession", "check_url", "is_loopback_name",
           "literal_address", "post", "refusal"]
