// A Twine app written the way twine-client-library's README shows, with nothing added for
// recovery: create the client, listenOn each room, subscribe once connected. What each callback
// receives is kept in `window.received` for the tests to read, and the server's `roomJoined`
// replies in `window.joined`, so a test can tell when the app is `ready()`.
// ?server= the Twine node, ?listen= rooms to listenOn, ?subscribe= rooms to subscribe to
// (default: the listened ones).
import TwineClientLibrary from 'twine-client-library';

const params = new URLSearchParams(location.search);
const listen = (params.get('listen') ?? 'news').split(',').filter(Boolean);
const subscribe = (params.get('subscribe') ?? listen.join(',')).split(',').filter(Boolean);

window.received = [];
window.joined = [];
const twine = new TwineClientLibrary(params.get('server') ?? location.origin);
for (const room of listen) {
  twine.listenOn(room, (message) => window.received.push(message));
}
const waiting = setInterval(() => {
  if (twine.socket?.connected) {
    clearInterval(waiting);
    twine.socket.on('roomJoined', (text) => window.joined.push(text));
    for (const room of subscribe) twine.subscribe(room);
  }
}, 20);
// Ready for live messages: the server has every subscription, and the library has attached a
// `message` listener per listenOn (each from a 100 ms timer; socket.io-client drops what arrives
// before any).
window.ready = () =>
  subscribe.every((room) => window.joined.includes(`You have joined room: ${room}`)) &&
  twine.socket.listeners('message').length >= listen.length;
window.twine = twine;
window.transport = () => twine.socket?.io?.engine?.transport?.name;
