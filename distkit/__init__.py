"""distkit: distributed-systems primitives for Python services.

Importing ``distkit`` is cheap: it loads no Redis, Kafka or SQL client. Import the subpackage you need::

    from distkit.idgen import Snowflake
    from distkit.locks import Locks
    from distkit.ratelimit import TokenBucket, Rate
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
