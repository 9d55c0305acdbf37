"""The write side: turning blob events into index rows, quota administration, reindex."""
