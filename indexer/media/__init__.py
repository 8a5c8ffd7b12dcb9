"""Files to pixels and metadata: walking folders, decoding every supported format at reduced size,
EXIF.
"""
