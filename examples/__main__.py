"""Run every reference app on embedded defaults (no servers needed): ``python -m examples``.

Each app is a module ``examples/<name>.py`` with ``main() -> None``; they run in name order and the run
fails if any of them raises.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback

import examples


def main() -> int:
    apps = [m.name for m in pkgutil.iter_modules(examples.__path__) if not m.name.startswith("_")]
    failed = []
    for name in sorted(apps):
        print(f"\n=== examples.{name} ===", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"examples.{name}").main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"--- examples.{name} ok in {time.perf_counter() - t0:.2f} s", flush=True)
    print(f"\n{len(apps) - len(failed)}/{len(apps)} reference apps ran cleanly")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
