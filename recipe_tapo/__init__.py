"""TAPO (Trajectory-Augmented Policy Optimization, arXiv 2606.18844) as a verl recipe.

Kept import-light on purpose: verl imports `recipe_tapo.plugin` in every Ray process.
"""
