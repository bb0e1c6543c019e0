"""Run the reference apps: ``python -m examples`` (all, in order) or ``python -m examples flash_sale``.

``--metrics-port N`` (or ``DISTKIT_METRICS_PORT=N``) serves distkit's metrics for Prometheus on
``http://127.0.0.1:N/metrics`` while the apps run (see ``examples/_metrics.py`` and ``docs/metrics.md``).

Each app is a package ``examples/<name>/`` whose ``main()`` builds a :class:`~examples._wiring.Wiring` from the
environment (embedded stand-ins when no ``DISTKIT_*`` URL is set), prints its narrative and raises
:class:`~examples._story.InvariantFailed` if one of its invariants does not hold. The exit code is 1 if any
app failed, 2 for an unknown name.
"""

from __future__ import annotations

import importlib
import sys
import time
import traceback

APPS = ("scenario_flow", "order_flow", "flash_sale", "gateway", "hot_config_cache", "config_upload")


def main(argv: list[str]) -> int:
    from examples import _metrics

    port, argv = _metrics.port_from(argv)
    if port is None:
        return _run(argv)
    with _metrics.serve(port) as endpoint:
        print(f"distkit metrics for Prometheus at {endpoint.url}", flush=True)
        return _run(argv)


def _run(argv: list[str]) -> int:
    chosen = [a for a in argv if a] or list(APPS)
    unknown = [a for a in chosen if a not in APPS]
    if unknown:
        print(f"unknown app(s) {unknown}; choose from {', '.join(APPS)}", file=sys.stderr)
        return 2
    failed = []
    for name in chosen:
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"examples.{name}").main()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        print(f"=== examples.{name} ok in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"\n{len(chosen) - len(failed)}/{len(chosen)} reference apps held their invariants")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
