"""``python -m nn_xp``: which backends are installed and usable here, and what ``auto`` picks."""
from .backends import format_backends

print(format_backends())
