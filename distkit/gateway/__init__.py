"""The gateway pieces: JWT verification, load balancers, a Redis service registry with heartbeats, passive
health checks and an ASGI :class:`Gateway` that wires them (see docs/gateway.md).

>>> from distkit.gateway import ServiceInstance, WeightedRoundRobin
>>> a, b, c = (ServiceInstance("order", "10.0.0.1", p, weight=w) for p, w in ((1, 5), (2, 1), (3, 1)))
>>> lb = WeightedRoundRobin()
>>> "".join("abc"[[a, b, c].index(lb.choose([a, b, c]))] for _ in range(7))
'aabacaa'
"""

from typing import TYPE_CHECKING

from distkit._lazy import lazy_getattr
from distkit.gateway.balancers import Balancer, LeastRequests, RoundRobin, WeightedRoundRobin
from distkit.gateway.health import OutlierDetector
from distkit.gateway.registry import Registration, ServiceInstance, ServiceRegistry, Watch

if TYPE_CHECKING:
    from distkit.gateway.app import Gateway
    from distkit.gateway.jwt import Claims, JwksSource, JwtVerifier

__getattr__ = lazy_getattr(__name__, {
    "JwtVerifier": "distkit.gateway.jwt", "JwksSource": "distkit.gateway.jwt", "Claims": "distkit.gateway.jwt",
    "Gateway": "distkit.gateway.app",
})

__all__ = [
    "Balancer",
    "Claims",
    "Gateway",
    "JwksSource",
    "JwtVerifier",
    "LeastRequests",
    "OutlierDetector",
    "Registration",
    "RoundRobin",
    "ServiceInstance",
    "ServiceRegistry",
    "Watch",
    "WeightedRoundRobin",
]
