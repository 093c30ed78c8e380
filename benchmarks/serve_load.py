"""`alexsuite serve` under load on the 70,000-image Fashion-MNIST index: queries/s and latency
at 1, 4 and 16 concurrent clients on loopback, errors, and the server's memory before and after
10,000 requests; against the same queries as cold `alexsuite search` processes in the same run.

    python benchmarks/serve_load.py [--seconds 10] [--model runs/demo/train]

Goals: no errors; 16 clients >= 2x the queries/s of 1 (batching works); a query through the
server >= 20x faster than a cold `search` process; memory growth <= 5% over 10,000 requests.
The index: all 70,000 images as PNG files (search_cold_start.py makes them and the index).
"""

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from _common import write_result
from search_cold_start import FOLDER, write_pngs

ALEXSUITE = [sys.executable, "-m", "alexsuite.cli"]
INDEX = Path("runs/bench/fm70k-serve-index")


def build_index(model: str) -> None:
    write_pngs()
    if not (INDEX / "index.faiss").exists():
        subprocess.run([*ALEXSUITE, "index", FOLDER, "--index", INDEX, "--model", model], check=True)


def start_server(port: int) -> subprocess.Popen:
    proc = subprocess.Popen([*ALEXSUITE, "serve", "--index", str(INDEX), "--port", str(port)])
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the server did not start")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def queries(n: int = 200) -> list[bytes]:
    files = sorted(FOLDER.rglob("test-*.png"))[::50][:n]
    return [f.read_bytes() for f in files]


def load(url: str, clients: int, seconds: float, bodies: list[bytes], limit: int | None = None) -> dict:
    """`clients` threads posting searches for `seconds` (or until `limit` requests)."""
    latencies, errors, lock = [], [], threading.Lock()
    end = time.monotonic() + seconds

    def client(offset: int):
        with httpx.Client(base_url=url, timeout=60) as c:
            i = offset
            while time.monotonic() < end and (limit is None or len(latencies) + len(errors) < limit):
                start = time.perf_counter()
                try:
                    r = c.post("/search?k=10", files={"file": ("q.png", bodies[i % len(bodies)])})
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                took = time.perf_counter() - start
                with lock:
                    (latencies if ok else errors).append(took)
                i += clients

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [float("nan")] * 99
    return {
        "clients": clients,
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "qps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q[49] * 1000, 2),
        "p95_ms": round(q[94] * 1000, 2),
        "p99_ms": round(q[98] * 1000, 2),
    }


def cold_searches(bodies: list[bytes], repeats: int) -> list[float]:
    tmp = Path("runs/bench/serve-queries")
    tmp.mkdir(parents=True, exist_ok=True)
    times = []
    for i in range(repeats):
        q = tmp / f"q{i}.png"
        q.write_bytes(bodies[i])
        start = time.perf_counter()
        subprocess.run(
            [*ALEXSUITE, "search", q, "--index", INDEX, "-k", "10", "--json"], check=True, capture_output=True
        )
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--model", default="runs/demo/train")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--cold", type=int, default=5, help="cold `alexsuite search` processes")
    args = ap.parse_args()
    build_index(args.model)
    bodies = queries()
    url = f"http://127.0.0.1:{args.port}"
    proc = start_server(args.port)
    try:
        load(url, 4, 2, bodies)  # warm-up
        rss_before = rss_mb(proc.pid)
        rows = [load(url, c, args.seconds, bodies) for c in (1, 4, 16)]
        served = sum(r["requests"] for r in rows)
        soak = load(url, 16, 600, bodies, limit=max(0, 10_000 - served))
        rss_after = rss_mb(proc.pid)
        stats = httpx.get(url + "/stats").json()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    cold = cold_searches(bodies, args.cold)
    one = rows[0]
    result = {
        "index_images": stats["images"],
        "model": args.model,
        "seconds_per_level": args.seconds,
        "levels": rows,
        "requests_total": served + soak["requests"],
        "errors_total": sum(r["errors"] for r in rows) + soak["errors"],
        "rss_mb_before": round(rss_before, 1),
        "rss_mb_after": round(rss_after, 1),
        "rss_growth": round(rss_after / rss_before - 1, 4),
        "batches": stats["batches"],
        "queries": stats["queries"],
        "cold_search_s": [round(t, 3) for t in cold],
        "cold_search_median_s": round(statistics.median(cold), 3),
        "qps_16_over_1": round(rows[2]["qps"] / one["qps"], 2),
        "cold_over_served_p50": round(statistics.median(cold) / (one["p50_ms"] / 1000), 1),
    }
    for r in rows:
        print(
            f"{r['clients']:>2} clients: {r['qps']:>7.1f} q/s, p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms, "
            f"p99 {r['p99_ms']} ms, errors {r['errors']}"
        )
    print(
        f"16 vs 1 client: {result['qps_16_over_1']}x; cold search {result['cold_search_median_s']} s = "
        f"{result['cold_over_served_p50']}x a served query; RSS {result['rss_mb_before']} -> "
        f"{result['rss_mb_after']} MB over {result['requests_total']:,} requests "
        f"({result['queries']:,} queries in {result['batches']:,} batches)"
    )
    print(f"results: {write_result('serve_load', result)}")


if __name__ == "__main__":
    main()
