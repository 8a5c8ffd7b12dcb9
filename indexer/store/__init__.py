"""The on-disk index: the SQLite catalog and its migrations, the FAISS vector store, the index
folder and its lock.
"""
