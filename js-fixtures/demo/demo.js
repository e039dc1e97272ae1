// The demo feed: the published twine-client-library, unchanged, against this Twine node (or the
// one named by ?server=). ?room= picks the room (default "lobby").
import TwineClientLibrary from 'twine-client-library';

const params = new URLSearchParams(location.search);
const server = params.get('server') ?? location.origin;
const room = params.get('room') ?? 'lobby';

const list = document.getElementById('messages');
const status = document.getElementById('status');
const statusText = document.getElementById('status-text');
const transport = document.getElementById('transport');
document.getElementById('room-name').textContent = room;

const time = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

function show(message) {
  const item = document.createElement('li');
  item.className = 'message';
  item.dataset.ts = String(message.timestamp);
  if (message.n !== undefined) item.dataset.n = String(message.n);
  const when = document.createElement('span');
  when.className = 'time';
  when.textContent = time.format(new Date(message.timestamp));
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = message.name || 'backend';
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = message.text ?? JSON.stringify(message);
  item.append(when, who, text);
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.append(item);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function setStatus(state, text) {
  status.dataset.state = state;
  statusText.textContent = text;
}

// The library as its README shows: listenOn right away (recovery delivers what was missed to
// it), subscribe once connected.
const twine = new TwineClientLibrary(server);
twine.listenOn(room, show);

// The library creates its socket once its /set-cookie request returns; the status line follows
// that socket, and says "live" once the server has the page in its room and the library listens
// (it attaches its listener from a 100 ms timer; what arrives before is not shown).
const watching = setInterval(() => {
  const socket = twine.socket;
  if (!socket) return;
  clearInterval(watching);
  let joined = false;
  const live = () => {
    if (!joined || !socket.connected || socket.listeners('message').length === 0) {
      setTimeout(live, 20);
      return;
    }
    setStatus('live', 'live');
    transport.textContent = socket.io.engine.transport.name;
    socket.io.engine.once('upgrade', (t) => (transport.textContent = t.name));
  };
  socket.on('roomJoined', (text) => {
    if (text === `You have joined room: ${room}`) {
      joined = true;
      live();
    }
  });
  socket.on('disconnect', () => {
    joined = false;
    setStatus('offline', 'reconnecting…');
  });
  // Recovery rejoins the room on later connects; subscribing once per page is enough.
  const subscribing = setInterval(() => {
    if (socket.connected) {
      clearInterval(subscribing);
      twine.subscribe(room);
    }
  }, 20);
}, 20);

document.getElementById('composer').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = event.target;
  const button = form.querySelector('button');
  const text = form.text.value.trim();
  if (!text) return;
  button.disabled = true;
  try {
    const res = await fetch(`${server}/demo/publish`, {
      method: 'POST',
      credentials: 'include',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ room, name: form.name.value, text }),
    });
    if (res.ok) form.text.value = '';
    else alert(await res.text());
  } finally {
    button.disabled = false;
    form.text.focus();
  }
});
