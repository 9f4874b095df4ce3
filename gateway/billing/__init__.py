"""Plans, prices and the credit ledger."""
