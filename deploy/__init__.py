"""Deployment tooling (not part of the runtime)."""
