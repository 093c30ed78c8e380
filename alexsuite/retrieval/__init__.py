"""Image retrieval with AlexNet features: FAISS indexes (index.py) kept on disk with their
metadata (store.py), filled from folders (indexer.py), queried (search.py) and scored
(evaluate.py)."""
