#!/usr/bin/env python3
"""A loopback TCP listener that relays each connection to tvpd's Unix socket.

schemathesis speaks HTTP over TCP; tvpd serves only a Unix socket. Each accepted TCP
connection gets its own connection to the socket, so tvpd sees every request on the
real socket (SO_PEERCRED: this bridge's uid). Prints the chosen port on stdout, then
relays until killed.

Usage: unix_bridge.py SOCKET_PATH
"""
import socket
import sys
import threading


def pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (dst,):
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def serve(conn: socket.socket, path: str) -> None:
    upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        upstream.connect(path)
    except OSError:
        conn.close()
        return
    t = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
    t.start()
    pump(conn, upstream)
    t.join()
    conn.close()
    upstream.close()


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: unix_bridge.py SOCKET_PATH")
    path = sys.argv[1]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(listener.getsockname()[1], flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn, path), daemon=True).start()


if __name__ == "__main__":
    main()
