"""Accounts, passwords, dashboard sessions and API keys."""
