"""Delivery: hand messages to providers exactly once, reconcile the unknown, poll and apply delivery statuses."""
