"""Compose: what a message says and costs: templates, placeholders, short links, SMS parts, fees."""
