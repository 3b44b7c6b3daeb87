"""Limits, budgets and run leases shared by many processes and machines, kept in Redis."""
