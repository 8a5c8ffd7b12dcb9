"""The offline demo: builds the shapes world, trains a tiny model, indexes and queries it."""
