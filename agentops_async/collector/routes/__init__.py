"""The collector's HTTP APIs, one module each, composed by ``build_app`` (collector/_app.py).

Each module has ``add_routes(app, ctx)``: it adds its routes, with handlers that use only the
shared :class:`~agentops_async.collector._context.Context` and the resolvers of
:mod:`agentops_async.collector._auth`. Route modules never import each other.

- ``_v2``: the AgentOps v2 API (sessions, events, agents, re-authorisation).
- ``_otlp``: OTLP/HTTP trace ingest (``/v1/traces``).
- ``_reads``: the read API (``/api/sessions``); reads through ``Context.reader`` only.
- ``_admin``: the admin API and the health check.
- ``_dashboard``: the web dashboard (sign-in, sessions list, session page); its shared parts
  (layout, sign-in cookie, static files) are in ``collector/_dashboard/`` for every page module.
"""
