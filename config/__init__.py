"""Hydra configs and prompt templates, installed as `recipe_tapo.conf` (data only)."""
