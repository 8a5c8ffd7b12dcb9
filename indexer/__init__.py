"""photoseek's write side: discover and decode photos, embed them, keep catalog and vectors."""
