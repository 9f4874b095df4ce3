"""The web dashboard for the people who own API keys: server-rendered pages (Jinja2) at
/signup, /login, /keys, /credits, /jobs, /playground, /webhooks and /docs/quickstart, plus the
offline API reference at /docs and /redoc. Every action calls the API's own service functions."""
