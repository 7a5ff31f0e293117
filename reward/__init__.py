"""Verifiable rewards, installed as `recipe_tapo.reward`."""
