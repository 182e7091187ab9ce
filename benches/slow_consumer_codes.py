# Slow consumers and their close code: N echo clients with a 4 KiB SO_RCVBUF stop reading and
# write 4 KiB messages until the server counts them as slow consumers (/metrics on the public
# port, so pass `--admin-listen public` to servers that have an admin listener), then read
# everything: how many see a close frame, and its code.
#
# usage: python3 benches/slow_consumer_codes.py BINARY BACKEND N [SERVER ARGS...]
import socket, struct, sys, os, subprocess, re, threading, collections
binary, backend, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = subprocess.Popen([binary,"serve","--listen","127.0.0.1:0","--backend",backend,"--shards","2","--max-messages-per-sec","0","--max-bytes-per-sec","0", *sys.argv[4:]],stderr=subprocess.PIPE,stdout=subprocess.DEVNULL,text=True, env=dict(os.environ, NO_COLOR="1"))
port=None
for line in p.stderr:
    m = re.search(r"listen=127.0.0.1:(\d+)", line)
    if m: port=int(m.group(1)); break
threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
def slow_total():
    c = socket.create_connection(("127.0.0.1", port)); c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    d=b""
    while True:
        x=c.recv(65536)
        if not x: break
        d+=x
    return sum(float(l.rsplit(" ",1)[1]) for l in d.decode().splitlines() if l.startswith("ringcast_slow_consumer_closes_total"))
frame = bytes([0x82, 0xfe]) + struct.pack(">H", 4096) + b"\0\0\0\0" + b"e"*4096
results = collections.Counter()
for i in range(n):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096); s.connect(("127.0.0.1", port))
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
    buf=b""
    while b"\r\n\r\n" not in buf: buf += s.recv(1)
    buf = buf[buf.index(b"\r\n\r\n")+4:]
    before = slow_total()
    try:
        while slow_total() <= before:
            for _ in range(64): s.sendall(frame)
    except OSError:
        pass
    s.settimeout(10)
    code = "no close frame"
    try:
        while True:
            while len(buf) >= 2:
                op = buf[0] & 0x0f; ln = buf[1] & 0x7f; h = 2
                if ln == 126: ln = struct.unpack(">H", buf[2:4])[0]; h = 4
                elif ln == 127: ln = struct.unpack(">Q", buf[2:10])[0]; h = 10
                if len(buf) < h + ln: break
                payload = buf[h:h+ln]; buf = buf[h+ln:]
                if op == 8: code = struct.unpack(">H", payload[:2])[0]; raise StopIteration
            d = s.recv(65536)
            if not d: break
            buf += d
    except StopIteration: pass
    except OSError as e: code = "no close frame (%s)" % e.__class__.__name__
    results[code] += 1
    s.close()
print(backend, dict(results))
p.kill()
