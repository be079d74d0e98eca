"""HTTP API under load: 500 concurrent POST /jobs, then GET polling at a fixed rate while one job trains.

    .venv/bin/python bench/api_load.py [--jobs 500] [--rate 200] [--poll_s 15] [--steps 400]

A real `python main.py serve` (uvicorn on 127.0.0.1, worker inside, SQLite file in a temp
folder). Phase 1 sends every POST at once; phase 2 starts when the first job is training
and sends GETs open-loop (one every 1/rate s, whether or not earlier ones have answered,
so a slow server shows up as latency instead of a lower rate): GET /jobs/{id} of the
training job and GET /jobs?limit=20 alternately. Prints p50/p99/max per phase and writes
bench/results/api_load.json. Target: 0 errors, all rows written, polling p99 < 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import httpx

REPO = Path(__file__).resolve().parents[1]
WORDS = "cat dog bird fish car bus train plane red blue green small big fast slow happy sad".split()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _summary(name: str, latencies: list[float], errors: int, wall: float) -> dict[str, Any]:
    ms = [v * 1000 for v in latencies]
    out = {"phase": name, "requests": len(ms) + errors, "errors": errors, "wall_s": round(wall, 2),
           "p50_ms": round(statistics.median(ms), 2) if ms else None,
           "p99_ms": round(_pct(ms, 0.99), 2) if ms else None, "max_ms": round(max(ms), 2) if ms else None}
    print(f"{name:<28} n={out['requests']:<5} errors={errors:<3} p50={out['p50_ms']} ms  p99={out['p99_ms']} ms  "
          f"max={out['max_ms']} ms  wall={out['wall_s']} s", flush=True)
    return out


async def _timed(session: aiohttp.ClientSession, method: str, url: str, ok: int, lat: list[float],
                 err: list[str], **kw: Any) -> Any:
    """One request; its latency goes to `lat` when it answers `ok`, else a line to `err`. Returns the JSON body."""
    t0 = time.perf_counter()
    try:
        async with session.request(method, url, **kw) as r:
            body = await r.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        err.append(f"{method} {url}: {type(e).__name__}: {e}")
        return None
    if r.status != ok:
        err.append(f"{method} {url}: {r.status} {body[:200]!r}")
        return None
    lat.append(time.perf_counter() - t0)
    return json.loads(body)


async def _get(session: aiohttp.ClientSession, path: str, **params: Any) -> Any:
    async with session.get(path, params=params) as r:
        r.raise_for_status()
        return await r.json()


async def run(url: str, config: dict[str, Any], n_jobs: int, rate: float, poll_s: float) -> dict[str, Any]:
    # aiohttp, not httpx: the load client shares the 2 cores with the server, and httpx spends about
    # 2.5 ms of CPU per request here, more than the server does.
    timeout = aiohttp.ClientTimeout(total=120)
    connector = aiohttp.TCPConnector(limit=n_jobs)
    async with aiohttp.ClientSession(url, timeout=timeout, connector=connector) as session:
        # Phase 1: every POST at once (each job its own output folder: the default save_dir).
        lat: list[float] = []
        err: list[str] = []
        t0 = time.perf_counter()
        await asyncio.gather(*[_timed(session, "POST", "/jobs", 202, lat, err, json={"config": config})
                               for _ in range(n_jobs)])
        post = _summary(f"{n_jobs} concurrent POST /jobs", lat, len(err), time.perf_counter() - t0)
        total = (await _get(session, "/jobs", limit=1))["total"]
        post["rows"] = total
        print(f"job rows after phase 1: {total}", flush=True)

        # Phase 2 starts once a job is training (the worker claims the oldest).
        deadline = time.monotonic() + 300
        running = None
        while time.monotonic() < deadline:
            page = (await _get(session, "/jobs", status="RUNNING", limit=1))["items"]
            if page and page[0]["job_data"].get("phase") == "training":
                running = page[0]["id"]
                break
            await asyncio.sleep(0.5)
        if running is None:
            raise SystemExit("no job reached the training phase within 300 s")
        print(f"job {running} is training; polling at {rate:.0f} req/s for {poll_s:.0f} s", flush=True)
        lat2: list[float] = []
        err2: list[str] = []
        tasks = []
        cpu0, start = os.times(), time.perf_counter()
        for i in range(int(rate * poll_s)):
            # Open loop: wait for the send time, not for earlier answers.
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            path = f"/jobs/{running}" if i % 2 == 0 else "/jobs?limit=20"
            tasks.append(asyncio.create_task(_timed(session, "GET", path, 200, lat2, err2)))
        await asyncio.gather(*tasks)
        cpu1 = os.times()
        poll = _summary(f"GET polling at {rate:.0f}/s", lat2, len(err2), time.perf_counter() - start)
        poll["client_cpu_ms_per_request"] = round((cpu1.user - cpu0.user + cpu1.system - cpu0.system)
                                                  * 1000 / max(1, len(lat2) + len(err2)), 3)
        print(f"load client CPU: {poll['client_cpu_ms_per_request']} ms per request", flush=True)
        job = await _get(session, f"/jobs/{running}")
        poll["training_job"] = {"id": running, "status": job["status"], "step": job["job_data"].get("step"),
                                "max_steps": job["job_data"].get("max_steps")}
        for e in (err + err2)[:10]:
            print("error:", e)
        return {"post": post, "poll": poll}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--poll_s", type=float, default=15.0)
    parser.add_argument("--steps", type=int, default=400, help="max_steps of the queued jobs (the one that trains)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "api_load.json"))
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="angle-lab-api-load-"))
    data = tmp / "pairs.jsonl"
    data.write_text("".join(json.dumps({"text1": " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(6)),
                                        "text2": " ".join(WORDS[(i * 5 + k) % len(WORDS)] for k in range(6)),
                                        "label": float(i % 6)}) + "\n" for i in range(512)))
    # The offline MiniLM (default model), small batches: one job keeps training through the polling phase.
    config = {"train_name_or_path": str(data), "epochs": 1, "max_steps": args.steps, "batch_size": 8,
              "maxlen": 32, "evaluate_before_training": False, "eval_strategy": "no", "save_strategy": "no",
              "logging_steps": 10}
    port = _port()
    env = {**os.environ, "ANGLE_LAB_DATA_DIR": str(tmp / "lab"), "ANGLE_LAB_DATA_ROOTS": str(tmp),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ANGLE_LAB_API_TOKEN", None)
    env.pop("ANGLE_LAB_DATABASE_URL", None)
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen([sys.executable, str(REPO / "main.py"), "serve", "--port", str(port)], cwd=str(REPO),
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            raise SystemExit(f"server did not start; log: {tmp / 'server.log'}")
        result = asyncio.run(run(url, config, args.jobs, args.rate, args.poll_s))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    result.update({"cpus": os.cpu_count(), "jobs": args.jobs, "rate": args.rate, "poll_s": args.poll_s,
                   "database": "sqlite (WAL)", "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})
    ok = (result["post"]["errors"] == 0 and result["poll"]["errors"] == 0 and result["post"]["rows"] == args.jobs)
    result["ok"] = ok
    result["poll_p99_under_50ms"] = bool(result["poll"]["p99_ms"] is not None and result["poll"]["p99_ms"] < 50)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}; {'OK' if ok else 'FAILED'} (errors/rows); polling p99 < 50 ms: "
          f"{result['poll_p99_under_50ms']}; server log {tmp / 'server.log'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
