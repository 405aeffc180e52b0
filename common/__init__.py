"""Shared code of the pocket bundle collection: networks, losses, data tools used by every bundle."""
