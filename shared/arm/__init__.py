"""Azure Resource Manager: the HTTP client, credentials, and the long-running-operation follower."""
