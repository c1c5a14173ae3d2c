#!/usr/bin/env python3
"""dramatiq on Redis: the peer of `jct-bench dispatch --peer dramatiq` (issue 12).

jct-bench starts a redis-server of its own and runs this script against it; by hand:

    pip install 'dramatiq[redis]'
    redis-server --port 6390 --save '' --appendonly no &
    python3 dramatiq_peer.py --redis-url redis://127.0.0.1:6390/0

burst: N no-op messages are enqueued first, then the dramatiq workers start; the
drain is timed from their start until the actor has run N times.
latency: with the workers running and idle, messages are sent 20 ms apart, each
carrying its send time; the actor records its start minus that.
One JSON line per mode on stdout. Redis is flushed before each mode.

The worker processes import this file as a module (the dramatiq CLI's broker
argument), so it must stay importable on its own: stdlib, dramatiq and redis only.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

# The workers are other processes: they learn the Redis from the environment
# this script hands them.
REDIS_URL_ENV = "JCT_PEER_REDIS_URL"
DONE_KEY = "jct-peer:done"
LATENCY_KEY = "jct-peer:start-minus-send-ns"
POLL_S = 0.005
DEADLINE_S = 600.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--latency-tasks", type=int, default=300)
    parser.add_argument("--mode", choices=["burst", "latency", "both"], default="both")
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = parse_args()
    os.environ[REDIS_URL_ENV] = ARGS.redis_url

if REDIS_URL_ENV not in os.environ:
    raise SystemExit(f"{REDIS_URL_ENV} is not set: run this file as a script, with --redis-url")

# A peer measured as users run it: dramatiq's default middleware, prefetch
# (2 x threads) and idle polling backoff; only --processes and --threads are set.
broker = RedisBroker(url=os.environ[REDIS_URL_ENV])
dramatiq.set_broker(broker)


@dramatiq.actor
def noop():
    broker.client.incr(DONE_KEY)


@dramatiq.actor
def timed(sent_ns):
    broker.client.rpush(LATENCY_KEY, time.time_ns() - sent_ns)


class Workers:
    """`dramatiq <this module> --processes P --threads T`, its log in a temp file."""

    def __init__(self, args):
        here = os.path.dirname(os.path.abspath(__file__))
        module = os.path.splitext(os.path.basename(__file__))[0]
        self.log = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dramatiq",
                module,
                "--processes",
                str(args.processes),
                "--threads",
                str(args.threads),
            ],
            cwd=here,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )

    def check_alive(self):
        if self.process.poll() is not None:
            raise RuntimeError(f"the dramatiq workers exited ({self.process.returncode}):\n{self.tail()}")

    def tail(self):
        self.log.seek(0)
        return "".join(self.log.readlines()[-20:])

    def stop(self):
        # SIGTERM: the CLI passes it on and its workers finish what they hold
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def wait_until(done, workers, what):
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        workers.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not finish in {DEADLINE_S:.0f} s:\n{workers.tail()}")
        time.sleep(POLL_S)


def completed():
    return int(broker.client.get(DONE_KEY) or 0)


def burst(args):
    broker.client.flushall()
    enqueue_started = time.monotonic()
    for _ in range(args.tasks):
        noop.send()
    enqueue_s = time.monotonic() - enqueue_started
    started = time.monotonic()
    workers = Workers(args)
    try:
        wait_until(lambda: completed() >= args.tasks, workers, "the burst")
        drain_s = time.monotonic() - started
    finally:
        workers.stop()
    return {
        "peer": "dramatiq",
        "mode": "burst",
        "tasks": args.tasks,
        "in_flight": args.processes * args.threads,
        "processes": args.processes,
        "threads": args.threads,
        "drain_s": round(drain_s, 3),
        "rate": round(args.tasks / drain_s, 1),
        "enqueue_rate": round(args.tasks / enqueue_s, 1),
    }


def quantile(ordered, q):
    # nearest rank, as jct-bench's histograms report it
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def latency(args):
    broker.client.flushall()
    workers = Workers(args)
    try:
        # one message through, so that the workers are up, then idle as
        # jct-bench leaves its worker before the latency run
        noop.send()
        wait_until(lambda: completed() >= 1, workers, "the first message")
        time.sleep(0.5)
        for _ in range(args.latency_tasks):
            timed.send(time.time_ns())
            time.sleep(0.020)
        wait_until(
            lambda: broker.client.llen(LATENCY_KEY) >= args.latency_tasks,
            workers,
            "the latency run",
        )
        samples = sorted(int(ns) for ns in broker.client.lrange(LATENCY_KEY, 0, -1))
    finally:
        workers.stop()
    return {
        "peer": "dramatiq",
        "mode": "latency",
        "tasks": args.latency_tasks,
        "in_flight": args.processes * args.threads,
        "p50_ms": round(quantile(samples, 0.50) / 1e6, 3),
        "p99_ms": round(quantile(samples, 0.99) / 1e6, 3),
        "max_ms": round(samples[-1] / 1e6, 3),
    }


def main(args):
    if args.mode in ("burst", "both"):
        print(json.dumps(burst(args)), flush=True)
    if args.mode in ("latency", "both"):
        print(json.dumps(latency(args)), flush=True)
    broker.client.flushall()


if __name__ == "__main__":
    try:
        main(ARGS)
    except Exception as error:  # one line for jct-bench to show, not a traceback
        sys.exit(f"dramatiq peer: {error}")
