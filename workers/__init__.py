"""Worker-level verl extensions, installed as `recipe_tapo.workers`."""
