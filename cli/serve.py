"""`alexsuite serve`."""

from __future__ import annotations

import click

from alexsuite.errors import MissingExtra
from alexsuite.serve.settings import ServeSettings

from .main import main
from .options import option


@main.command(name="serve")
@option(ServeSettings, "index", "--index")
@option(ServeSettings, "detector", type=click.Path(file_okay=False))
@option(ServeSettings, "model")
@option(ServeSettings, "host")
@option(ServeSettings, "port", type=click.IntRange(1, 65535))
@option(ServeSettings, "token")
@option(ServeSettings, "insecure")
@option(ServeSettings, "max_upload_mb", type=click.FloatRange(min=0, min_open=True))
@option(ServeSettings, "max_pixels", type=click.IntRange(min=1))
@option(ServeSettings, "k", "-k", type=click.IntRange(min=1))
@option(ServeSettings, "batch_ms", type=click.FloatRange(min=0))
@option(ServeSettings, "max_batch", type=click.IntRange(min=1))
@option(ServeSettings, "reload_seconds", type=click.FloatRange(min=0, min_open=True))
@option(ServeSettings, "device")
def serve_cmd(**settings):
    """Serve image search (and detection) over HTTP, with a web page at /, until Ctrl-C.

    The model, the index and the detector load once; queries arriving together share one
    forward pass and one FAISS call; an `alexsuite index` run adding to the index shows in
    searches within a second of each commit, without a restart.

    \b
    Examples:
      alexsuite serve --index runs/demo/index --detector runs/demo/detector   # http://127.0.0.1:8000
      alexsuite serve --host 0.0.0.0 --token "$(openssl rand -hex 16)"      # other machines, with a token
      curl -F file=@query.jpg 'http://127.0.0.1:8000/search?k=5'

    \b
    API (JSON, the shapes of search/detect --json; errors are {"error": ...}):
      POST /search?k=&params=   multipart field `file`     GET /search?id=N&k=
      POST /detect              multipart field `file`     GET /images/{id}, /thumbs/{id}
      GET /health, /stats       OpenAPI page: /docs

    Prints one line with its address, then serves; writes nothing (the index is opened read-only).
    """
    opts = ServeSettings(**settings).check()
    try:
        from alexsuite.serve.run import serve
    except ImportError as e:
        raise MissingExtra(f"serve needs {e.name}: pip install 'alexsuite[serve]' (or make setup)") from None

    serve(opts, lambda m: click.echo(m, err=True))
