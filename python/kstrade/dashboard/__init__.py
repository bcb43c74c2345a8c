"""The trading dashboard in the browser (`python -m kstrade dashboard`, the `dashboard` extra).

    view.py      what the page shows, kept in memory and updated record by record (pure logic)
    follower.py  the background reader: the pipeline's topics from their start, its own group, no commits
    web.py       the FastAPI app: JSON API under /api, server-sent events, the page, operator controls
    api.py       the API's models (its OpenAPI document at /api/openapi.json)
    runs.py      finished run directories as the run pages show them (/runs/{name}; pure logic)
    static/      the pages (plain JS) and the vendored TradingView Lightweight Charts (Apache-2.0)

`view` and `follower` need nothing beyond kstrade; `web` needs fastapi and uvicorn.
"""
