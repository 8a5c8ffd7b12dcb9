"""The parts of the indexing benchmark that `bench/index_bench.py` runs and reports together."""
