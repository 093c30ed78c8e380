"""`alexsuite serve`: search and detection over HTTP (FastAPI on uvicorn) and a web page.

settings.py holds its defaults; live.py keeps the index open and follows its commits;
batching.py merges concurrent queries into one forward pass and one FAISS call; app.py is the
HTTP API and the page in static/."""
