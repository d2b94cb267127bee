"""Pulling from partners: verify every entry, apply batches atomically, repair by digest."""
