"""HTTP plumbing shared by the API functions: responses, ARM error shape, async request-reply."""
