#!/usr/bin/env python3
"""Issue 13 item 1: the broker's RSS while one device floods `history` and never reads.

Starts the given octet binary on loopback with a fresh data dir, fills one person's log with
500 messages of 60 KB, then sends `{"op":"history","limit":500}` 40 times on that device's
connection and never reads. It samples the broker's VmRSS from /proc/<pid>/status every
50 ms until the connection is kicked as a slow consumer or gone (or `--watch` passes), and then
reads what the device would find: the frames (largest size) and the close code.

    python3 loadtest/history_flood.py target/release/octet [--idle-timeout 10]

Standard library only (a minimal WebSocket client: masked text frames out, frames in).
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request

APP_TOKEN = "flood-app-token-0123456789"
APPID = "com.example.flood"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def backend(port, request):
    request = dict(request, token=APP_TOKEN)
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/backend",
        data=json.dumps(request).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read())


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(rf"^{name} (\d+)", text, re.M)
    return int(found.group(1)) if found else -1


class Ws:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += self.sock.recv(1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.buf = b""

    def send(self, obj):
        payload = json.dumps(obj).encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self):
        """(opcode, payload bytes)"""
        b0, b1 = self._read(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read(8))
        return b0 & 0x0F, self._read(n)

    def recv_json(self):
        while True:
            op, payload = self.recv()
            if op == 1:
                return json.loads(payload)
            if op == 8:
                return {"op": "closed", "code": struct.unpack("!H", payload[:2])[0]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("binary")
    parser.add_argument("--idle-timeout", type=int, default=10)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--watch", type=float, default=60.0, help="longest wait for the close")
    args = parser.parse_args()

    port = free_port()
    data = tempfile.mkdtemp(prefix="octet-flood-")
    broker = subprocess.Popen(
        [
            args.binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
            "--app-token", APP_TOKEN, "--idle-timeout", str(args.idle_timeout),
            "--send-rate", "100000", "--send-burst", "100000",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                metric(port, "octet_connections")
                break
            except OSError:
                time.sleep(0.05)
        token = backend(port, {"op": "useradd", "user": {"address": "flood@example.com",
                        "token": {"appid": APPID, "expiry": 525600, "device": "a"}}})["user"]["token"]
        backend(port, {"op": "useradd", "user": {"address": "sink@example.com"}})
        ws = Ws(port)
        ws.send({"op": "login", "token": token, "appid": APPID})
        assert ws.recv_json()["op"] == "welcome"
        body = "x" * 60_000
        for i in range(args.messages):
            ws.send({"op": "send", "id": f"m{i}", "to": "sink@example.com", "body": body})
        sent = 0
        while sent < args.messages:
            frame = ws.recv_json()
            sent += frame["op"] == "sent"
        baseline = rss_kib(broker.pid)

        start = time.monotonic()
        for _ in range(args.requests):
            ws.send({"op": "history", "limit": 500})
        peak = baseline
        closed_after = None
        while time.monotonic() - start < args.watch:
            peak = max(peak, rss_kib(broker.pid))
            # Kicked as a slow consumer, or the session gone: the device is being closed (its
            # close frame waits for it to read, which it does right after).
            if (metric(port, "octet_slow_consumer_closes_total") > 0
                    or metric(port, "octet_connections") == 0):
                closed_after = time.monotonic() - start
                break
            time.sleep(0.05)
        peak = max(peak, rss_kib(broker.pid))

        largest, frames, close = 0, 0, None
        ws.sock.settimeout(10)
        try:
            while True:
                op, payload = ws.recv()
                if op == 8:
                    close = struct.unpack("!H", payload[:2])[0]
                    break
                if op == 1:
                    frames += 1
                    largest = max(largest, len(payload))
        except (EOFError, OSError):
            pass
        print(f"broker RSS before the flood: {baseline / 1024:.0f} MiB")
        print(f"broker RSS peak during it:   {peak / 1024:.0f} MiB "
              f"(+{(peak - baseline) / 1024:.0f} MiB)")
        if closed_after is None:
            print(f"connection still open after {args.watch:.0f} s")
        else:
            print(f"connection closing after {closed_after:.1f} s "
                  f"(idle timeout {args.idle_timeout} s)")
        print(f"the device then read {frames} frames, the largest {largest} bytes, close {close}")
    finally:
        broker.terminate()
        broker.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
