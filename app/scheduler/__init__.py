"""Scheduled batches of outbound calls: pacing, capacity, retries, and the loop that dials them."""
