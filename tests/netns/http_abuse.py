#!/usr/bin/env python3
"""Bad and many clients for icmpmon's metrics endpoint (tests/netns/metrics.sh).

http_abuse.py HOST PORT MODE [N]
  status PATH|RAW   prints the status code of one request (RAW: a Python
                    bytes literal sent as is)
  bigheader N       prints the status code of a request with an N-byte
                    header
  concurrent N      N clients start at once, each connects and scrapes;
                    prints "ok=<200s> failed=<others> seconds=<elapsed>"
  slowloris N       holds N connections that send a header byte a second
                    (until killed); prints "open" once they are connected
"""
import ast, socket, sys, threading, time

host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def status_of(raw, timeout=30):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        try:
            s.sendall(raw)
        except OSError:
            pass  # refused before the end: the answer may be there
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        line = data.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else 0, data
    finally:
        s.close()


if mode == "status":
    arg = sys.argv[4]
    raw = ast.literal_eval(arg) if arg.startswith("b") else f"GET {arg} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    try:
        print(status_of(raw)[0])
    except OSError as e:
        print(f"error {e}")
elif mode == "bigheader":
    raw = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * int(sys.argv[4]) + b"\r\n\r\n"
    try:
        print(status_of(raw)[0])
    except OSError as e:
        print(f"error {e}")
elif mode == "concurrent":
    n = int(sys.argv[4])
    results = []
    lock = threading.Lock()
    go = threading.Event()
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\n\r\n"

    def one():
        ok = False
        go.wait()
        try:
            s = socket.create_connection((host, port), timeout=60)
            s.sendall(req)
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            s.close()
            ok = data.startswith(b"HTTP/1.1 200") and data.rstrip().endswith(b"# EOF")
        except OSError:
            pass
        with lock:
            results.append(ok)

    t0 = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join()
    good = sum(results)
    print(f"ok={good} failed={n - good} seconds={time.monotonic() - t0:.1f}")
elif mode == "slowloris":
    n = int(sys.argv[4])
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(b"GET /metrics HTTP/1.1\r\n")
        socks.append(s)
    print("open", flush=True)
    while True:
        time.sleep(1)
        for s in list(socks):
            try:
                s.sendall(b"X")
            except OSError:
                socks.remove(s)
                # Closed by the server: come back, as an attacker would.
                try:
                    s = socket.create_connection((host, port), timeout=10)
                    s.sendall(b"GET /metrics HTTP/1.1\r\n")
                    socks.append(s)
                except OSError:
                    pass
