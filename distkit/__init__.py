"""distkit: distributed-systems primitives for Python services.

Importing ``distkit`` is cheap: it loads no Redis, Kafka or SQL client. Import the subpackage you need::

    from distkit.idgen import Snowflake
    from distkit.locks import Locks
    from distkit.ratelimit import TokenBucket, Rate

Logging: every distkit logger sits under ``logging.getLogger("distkit")``, which has a ``NullHandler`` (the
library convention), so distkit prints nothing unless the application configures logging.
"""

import logging as _logging

__version__ = "0.1.0"

__all__ = ["__version__"]

_logging.getLogger(__name__).addHandler(_logging.NullHandler())
