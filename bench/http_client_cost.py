"""What one probe GET costs the daemon: httpx against host/http_client.py (h11), in one process, alternating.

Serves the example service (seeded, on a free port, as the probe tests do) and sends ``--requests`` keep-alive
GETs of /health through each client in turn, ``--rounds`` times, in the order the probes used them: httpx as
probes/http_request.py did (``stream`` + ``aiter_bytes`` with the body cap), the h11 client as it does now
(``get(max_body=...)``). CPU is this process's ``time.process_time()`` per request (the service's own CPU is its
own). Then the resident memory each client adds, each in a fresh interpreter: after ``import asyncio`` (which
both need), the import, then one client made as the daemon made it and one GET sent.

    .venv/bin/python bench/http_client_cost.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.probes.example_app import VbrpgApp, serving  # noqa: E402

MAX_BODY_BYTES = 64 * 1024  # probes/http_request.py's cap

RSS_CHILD = """
import asyncio, json, sys
from pathlib import Path

def rss():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

url, which = sys.argv[1], sys.argv[2]
base = rss()
if which == "httpx":
    sys.modules["httpx._main"] = None  # as cli/run.py kept httpx's command line (click, pygments) out
    import httpx
    from rollbackd.host.tls_context import LazyCertifiContext
    imported = rss()

    async def once():
        verify = LazyCertifiContext()  # the daemon's httpx client: no CA bundle read for http
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=verify) as client:
            await client.get(url, timeout=5)
else:
    from rollbackd.host.http_client import HttpClient
    imported = rss()

    async def once():
        async with HttpClient() as client:
            await client.get(url, timeout=5)

asyncio.run(once())
print(json.dumps({"import": imported - base, "after_get": rss() - base, "modules": sorted(sys.modules)}))
"""


def httpx_get(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(trust_env=False, follow_redirects=False)

    async def get() -> None:
        async with client.stream("GET", url, timeout=httpx.Timeout(5.0)) as response:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body.extend(chunk)
                if len(body) >= MAX_BODY_BYTES:
                    break
            assert response.status_code == 200

    return get, client.aclose


def h11_get(url: str) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    from rollbackd.host.http_client import HttpClient

    client = HttpClient()

    async def get() -> None:
        response = await client.get(url, timeout=5.0, max_body=MAX_BODY_BYTES)
        assert response.status == 200

    return get, client.aclose


async def cpu_per_request(url: str, requests: int, rounds: int) -> dict[str, list[float]]:
    clients = {"httpx": httpx_get(url), "h11 client": h11_get(url)}
    for get, _ in clients.values():
        for _ in range(50):  # warm: connection open, lazy imports done
            await get()
    results: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(rounds):
        for name, (get, _) in clients.items():
            started = time.process_time()
            for _ in range(requests):
                await get()
            results[name].append((time.process_time() - started) / requests * 1000)
    for _, close in clients.values():
        await close()
    return results


def resident(url: str, which: str) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", RSS_CHILD, url, which], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(done.stdout)
    loaded = {name.split(".")[0] for name in report["modules"]}
    wanted = ("httpx", "httpcore", "anyio", "sniffio", "idna", "certifi", "h11", "click", "pygments")
    report["packages"] = [name for name in wanted if name in loaded]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="GETs per client per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rollbackd-http-bench-") as root:
        app = VbrpgApp(Path(root)).create(rooms=1)
        with serving(app):
            url = f"{app.base_url}/health"
            results = asyncio.run(cpu_per_request(url, args.requests, args.rounds))
            memory = {which: resident(url, which) for which in ("httpx", "h11")}
    print(f"{args.requests} keep-alive GETs of /health per client per round, {args.rounds} rounds, alternating")
    print(f"{'client':<12} {'CPU ms/GET median':>18} {'min':>6} {'max':>6}")
    for name, values in results.items():
        print(f"{name:<12} {statistics.median(values):>18.3f} {min(values):>6.3f} {max(values):>6.3f}")
    print()
    print(f"{'client':<12} {'RSS import MiB':>15} {'after a GET':>12}  packages loaded")
    for which, report in memory.items():
        print(f"{which:<12} {report['import']:>15.1f} {report['after_get']:>12.1f}  {', '.join(report['packages'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
