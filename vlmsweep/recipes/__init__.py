"""Recipes that train with train/ and score with evaluate/: the warmed embedded model's (warmup)."""
