#!/usr/bin/env python3
# Kernel memory per idle loopback TCP connection: slab growth of the socket caches while N
# connections (both ends on this box) sit idle. Run as root (reads /proc/slabinfo):
#   sudo python3 sysctl/socket-memory.py 9000
# The open-file limit must allow 2N descriptors. Figures: docs/tuning.md.
import socket, sys, time, resource
N = int(sys.argv[1])
def slab():
    out = {}
    for line in open('/proc/slabinfo').read().splitlines()[2:]:
        f = line.split()
        out[f[0]] = int(f[1]) * int(f[3])  # active_objs * objsize
    return out
def meminfo():
    d = {}
    for l in open('/proc/meminfo'):
        k, v = l.split(':'); d[k] = int(v.split()[0]) * 1024
    return d
resource.setrlimit(resource.RLIMIT_NOFILE, (2 * N + 100, 2 * N + 100))
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(('127.0.0.1', 0)); ls.listen(4096)
addr = ls.getsockname()
time.sleep(0.5)
s0 = slab(); m0 = meminfo()
clients, servers = [], []
for i in range(N):
    c = socket.create_connection(addr); clients.append(c)
    s, _ = ls.accept(); servers.append(s)
time.sleep(0.5)
s1 = slab(); m1 = meminfo()
diff = sorted(((s1.get(k, 0) - s0.get(k, 0), k) for k in s1), reverse=True)
total = sum(d for d, k in diff if d > 0)
print(f"connections {N} (both ends on this box, {2*N} sockets)")
for d, k in diff[:8]:
    print(f"  {k:24s} {d / N:8.0f} B per connection")
print(f"slab growth: {total / N:.0f} B per connection, {total / (2*N):.0f} B per socket")
print(f"Slab (meminfo): {(m1['Slab'] - m0['Slab']) / N:.0f} B per connection")
