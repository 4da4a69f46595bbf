"""Reverse proxies in front of Ray Serve, rendered from the same settings."""
