"""photoseek's read side: query encoding, kNN, filters, rerank, output and the CLI."""
