"""Tools over an open index: describe (image to text), duplicates, status, HTML rendering."""
