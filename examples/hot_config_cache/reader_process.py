"""A reader *process*: ``python -m examples.hot_config_cache.reader_process NAMESPACE THREADS FINAL_VERSION``.

It needs the ``DISTKIT_*`` URLs of real servers (fakeredis lives inside one process) and the namespace of a
running app; it prints ``ready`` once its readers have read the configuration, then one JSON
:class:`~examples.hot_config_cache.readers.ReaderReport`.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict

from examples._wiring import Wiring
from examples.hot_config_cache.readers import run_readers
from examples.hot_config_cache.service import config_cache
from examples.hot_config_cache.store import ConfigStore


def main(namespace: str, threads: int, final_version: int) -> None:
    wiring = Wiring.from_env()
    wiring.namespace = namespace
    cache, locks = config_cache(wiring, ConfigStore(wiring.engine, wiring.table("config")))
    ready = threading.Event()
    threading.Thread(target=lambda: (ready.wait(), print("ready", flush=True)), daemon=True).start()
    report = run_readers(cache, threads, final_version, ready=ready)
    print(json.dumps(asdict(report)), flush=True)
    cache.close()
    locks.close()
    wiring.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
