"""A python-socketio client following the Twine flow: fetch the cookie, connect with it,
subscribe, then print every message of the room as a JSON line until `count` have arrived.

usage: client.py URL ROOM COUNT
"""

import json
import sys
import threading
import urllib.request

import socketio

url, room, count = sys.argv[1], sys.argv[2], int(sys.argv[3])

with urllib.request.urlopen(f"{url}/set-cookie") as response:
    cookie = response.headers["Set-Cookie"].split(";")[0]

client = socketio.Client(reconnection=False)
joined = threading.Event()
done = threading.Event()
received = []
printing = threading.Lock()


def emit_line(record):
    # Handlers run on their own threads: one write per line, one writer at a time.
    with printing:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


@client.on("roomJoined")
def on_joined(text):
    emit_line({"roomJoined": text, "transport": client.transport()})
    joined.set()


@client.on("message")
def on_message(message):
    if message.get("room") != room:
        return
    received.append(message)
    client.emit("updateSessionTS", message["timestamp"])
    emit_line({"message": message})
    if len(received) >= count:
        done.set()


client.connect(url, headers={"Cookie": cookie}, wait_timeout=10)
client.emit("subscribe", room)
if not joined.wait(10):
    sys.exit("no roomJoined")
emit_line({"ready": True})
ok = done.wait(20)
client.disconnect()
sys.exit(0 if ok else "timed out waiting for messages")
