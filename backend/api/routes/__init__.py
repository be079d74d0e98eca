"""The API's routers, one per resource: jobs, files (logs and artifacts), templates, meta."""
