"""A python-socketio client that stays: fetch the cookie, connect with it (reconnecting by itself),
subscribe, and print every connect, disconnect and message of the room as a JSON line until
killed. Missed messages come back by the cookie's session on whichever node it reaches.

usage: reconnecting.py URL ROOM
"""

import json
import sys
import threading
import time
import urllib.request

import socketio

url, room = sys.argv[1], sys.argv[2]

with urllib.request.urlopen(f"{url}/set-cookie") as response:
    cookie = response.headers["Set-Cookie"].split(";")[0]

client = socketio.Client(reconnection=True, reconnection_delay=0.5, reconnection_delay_max=1)
printing = threading.Lock()


def emit_line(record):
    # Handlers run on their own threads: one write per line, one writer at a time.
    with printing:
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()


@client.event
def connect():
    emit_line({"connected": True})
    client.emit("subscribe", room)


@client.event
def disconnect(*reason):
    emit_line({"disconnected": [str(r) for r in reason]})


@client.on("roomJoined")
def on_joined(text):
    emit_line({"roomJoined": text})


@client.on("message")
def on_message(message):
    if message.get("room") != room:
        return
    client.emit("updateSessionTS", message["timestamp"])
    emit_line({"message": message})


client.connect(url, headers={"Cookie": cookie}, transports=["websocket"], wait_timeout=10)
while True:
    time.sleep(1)
