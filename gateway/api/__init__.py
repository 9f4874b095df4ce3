"""The HTTP surface of the gateway: routes, dependencies and error shapes."""
