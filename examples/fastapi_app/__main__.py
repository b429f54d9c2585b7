"""Serve the FastAPI poll: ``python -m examples.fastapi_app`` from the repository root.

Environment: ``HOST`` (default 127.0.0.1), ``PORT`` (default 8000) and
``STREAMUI_SECRET`` (default: the demo's fixed secret).
"""

import os

import uvicorn

from examples.fastapi_app import app


def main() -> None:
    host = os.environ.get("HOST", "127.0.0.1")
    port = int(os.environ.get("PORT", "8000"))
    print(f"streamui FastAPI poll: http://{host}:{port} (open it in two windows)", flush=True)
    uvicorn.run(app, host=host, port=port)


if __name__ == "__main__":
    main()
