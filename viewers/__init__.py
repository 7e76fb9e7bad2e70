"""Viewers (``fourreal.viewers``). viser is imported only inside the modules that need it."""
