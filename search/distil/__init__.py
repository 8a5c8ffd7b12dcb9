"""Distil a teacher reranker into the index model's compact ITM head: the text pool and its
edits, the ITC candidates, the teacher's cached scores, the run, and agreement."""
