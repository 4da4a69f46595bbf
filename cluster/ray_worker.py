"""`ray start` for a worker node whose head listens on loopback (one-host clusters, as in the tests).

Ray's CLI refuses to start a worker while RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and without that it
rewrites 127.0.0.1 in `--address` to the host's outward IP, where a loopback head does not listen. Keeping
a loopback address as given is the only change; the rest is Ray's own `ray start`.

    python -m cluster.ray_worker start --address 127.0.0.1:6380 --node-ip-address 127.0.0.1 ...
"""

from __future__ import annotations

import sys

import ray._private.services as services
from ray._common.network_utils import is_localhost

_resolve = services.resolve_ip_for_localhost


def _keep_loopback(host: str) -> str:
    return host if is_localhost(host) else _resolve(host)


services.resolve_ip_for_localhost = _keep_loopback

if __name__ == "__main__":
    from ray.scripts.scripts import main

    sys.argv[0] = "ray"
    sys.exit(main())
