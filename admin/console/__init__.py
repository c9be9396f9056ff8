"""The supervisor console: server-rendered pages at ``/console`` on the admin listener
(docs/console.md).

Sign-in with an API token (:mod:`admin.console.session`), a live wallboard per tenant
(:mod:`admin.console.live`), live views and supervisor actions
(:mod:`admin.console.pages_live`), configuration (:mod:`admin.console.pages_config`) and
the audit log. Every action calls the admin API in process (:mod:`admin.console.api`).
"""
