"""Rerankers: rescoring a search's candidates (the index model's own ITM head)."""
