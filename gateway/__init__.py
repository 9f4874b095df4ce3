"""The lipsyncd gateway: REST API, accounts, API keys, credits, and the API side of the job bus."""
