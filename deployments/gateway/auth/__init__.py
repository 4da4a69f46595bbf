"""Who may do what: API keys (kept in Redis), the organisation's JWTs, roles and grants, quotas.

The `Authenticate` middleware verifies every `/v1/...` and `/metrics` request before routing and puts the
caller's `Identity` on the request; routes and stages ask that identity what it may do.
"""
