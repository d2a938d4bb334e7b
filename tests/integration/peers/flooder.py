# Hostile peers for tests/integration/test_flood.cpp, inside the test's network namespace.
# Usage: flooder.py GATEWAY_PORT GROUP COAP_PORT MQTT_PORT BASE_TOPIC
# Prints one line per stage ("DONE <stage> <count>") and "FLOOD_DONE" at the end.
import os, random, socket, struct, sys, time

gw_port, group, coap_port, mqtt_port, base = (int(sys.argv[1]), sys.argv[2], int(sys.argv[3]),
                                              int(sys.argv[4]), sys.argv[5])
gw = ("127.0.0.1", gw_port)
rng = random.Random(17)

def option(delta, value):
    def nib(n):
        return (n, b"") if n < 13 else (13, bytes([n - 13])) if n < 269 else (14, struct.pack(">H", n - 269))
    d, dx = nib(delta)
    l, lx = nib(len(value))
    return bytes([(d << 4) | l]) + dx + lx + value

def request(code, mid, token, options, payload=b"", con=True):
    out = bytes([0x40 | (0 if con else 0x10) | len(token), code]) + struct.pack(">H", mid) + token
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        out += option(number - last, value)
        last = number
    return out + (b"\xff" + payload if payload else b"")

def stage(name, count):
    print("DONE", name, count, flush=True)

tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
tx.bind(("127.0.9.1", 0))

# 1. 100,000 datagrams of junk (random bytes, random sizes) at the gateway's listener.
for i in range(100000):
    tx.sendto(rng.randbytes(rng.randint(0, 64)), gw)
    if i % 2000 == 0:
        time.sleep(0.01)  # the socket buffer, not the gateway, would drop the rest
stage("junk", 100000)

# 2. 10,000 malformed CoAP messages: a valid header, then options that are not.
bad = [b"\xf0", b"\xd1", b"\xb5\x61", b"\x0f", b"\x1d\xff\x00", b"\xe1\xff"]
for i in range(10000):
    head = bytes([0x40 | rng.randint(0, 8), rng.choice([1, 2, 3, 4, 0x45, 0xff])]) + struct.pack(">H", i)
    tx.sendto(head + rng.randbytes(head[0] & 0x0f) + rng.choice(bad), gw)
    if i % 1000 == 0:
        time.sleep(0.01)
stage("malformed", 10000)

# 3. 5,000 RD registrations with hostile names, each from its own address.
names = ["bridge", "../x", "#", "+", "a/b", "a\x00b", "x" * 300, "%2e%2e", "", " ", "\xff",
         "bridge/request", "$SYS", "ep=ep", "é" * 40]
for i in range(5000):
    ep = names[i % len(names)] + ("" if i < len(names) else str(i))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.3.%d.%d" % (i // 250, 1 + i % 250), 0))
    q = [(11, b"rd"), (12, b"\x28"), (15, ("ep=" + ep).encode("utf-8", "surrogateescape")),
         (15, b"lt=600")]
    s.sendto(request(2, i, struct.pack(">H", i), q, b"</sensors/counter>;obs;rt=\"c\""), gw)
    s.close()
    if i % 50 == 0:
        time.sleep(0.01)  # a slower (sanitized) gateway: fewer lost in the socket buffer
stage("rd", 5000)

# 4. 5,000 fake answers to the gateway's next multicast discovery round, each from its own
#    address (the round is started over MQTT by the test; we answer the GET we see).
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
rx.bind((group, coap_port))
rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
              struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("127.0.0.1")))
print("LISTENING", flush=True)
rx.settimeout(60)
while True:
    data, peer = rx.recvfrom(2048)
    if len(data) >= 4 and data[0] >> 6 == 1 and data[1] == 1:
        break
tkl = data[0] & 0x0F
answer = (bytes([0x50 | tkl, 0x45]) + data[2:4] + data[4:4 + tkl] + bytes([0xC1, 40, 0xFF]) +
          b"</sensors/counter>;obs;rt=\"c\",</a>;sz=9223372036854775808")
for i in range(5000):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.4.%d.%d" % (i // 250, 1 + i % 250), coap_port))
    s.sendto(answer, peer)
    s.close()
    if i % 100 == 0:
        time.sleep(0.005)
stage("multicast", 5000)

# 5. 10,000 hostile MQTT commands from one client (MQTT 3.1.1, QoS 0 and 1), some retained.
def utf8(s):
    b = s.encode("utf-8", "surrogateescape")
    return struct.pack(">H", len(b)) + b

def packet(kind, body):
    n, rem = len(body), b""
    while True:
        byte, n = n % 128, n // 128
        rem += bytes([byte | (0x80 if n else 0)])
        if not n:
            break
    return bytes([kind]) + rem + body

m = socket.create_connection(("127.0.0.1", mqtt_port))
m.sendall(packet(0x10, utf8("MQTT") + b"\x04\x02\x00\x3c" + utf8("hostile")))
assert m.recv(4)[:2] == b"\x20\x02"
topics = [base + "/real/actuators/../set", base + "/real/actuators/%2e%2e/set",
          base + "/real/actuators/%2F..%2Fsecret/set", base + "/real/sensors/counter/set",
          base + "/nobody/actuators/led/set", base + "/real/actuators//set",
          base + "/real/actuators/led/set", base + "/bridge/request/device/remove",
          base + "/bridge/request/device/read", base + "/bridge/request/nonsense"]
payloads = [b"on", b"{", b"x" * 70000, b"\xff\xfe", b'{"device":"real","path":"/../x"}']
for i in range(10000):
    qos = i % 2
    flags = (qos << 1) | (1 if i % 10 == 0 else 0)
    body = utf8(topics[i % len(topics)]) + (struct.pack(">H", i % 65535 + 1) if qos else b"")
    m.sendall(packet(0x30 | flags, body + payloads[i % len(payloads)]))
# Retained messages stay on the broker: clear them so later tests see nothing.
for t in topics:
    m.sendall(packet(0x31, utf8(t)))
m.sendall(packet(0xe0, b""))
m.close()
stage("mqtt", 10000)
print("FLOOD_DONE", flush=True)
