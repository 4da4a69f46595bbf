"""The Gateway deployment, the service's one HTTP ingress.

Kept import-free: the Ray-free modules here (`protocol`, `sse`) are imported by the batch jobs and the
Locust suite, which must not pull in Ray or FastAPI by importing this package.
"""
