"""Intake: read the task file, validate every row and store it as a message (or a rejection)."""
