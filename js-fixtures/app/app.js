// A Twine app written the way twine-client-library's README shows, with nothing added for
// recovery: create the client, listenOn each room, subscribe once connected. What each callback
// receives is kept in `window.received` for the tests to read.
// ?server= the Twine node, ?listen= rooms to listenOn, ?subscribe= rooms to subscribe to
// (default: the listened ones).
import TwineClientLibrary from 'twine-client-library';

const params = new URLSearchParams(location.search);
const listen = (params.get('listen') ?? 'news').split(',').filter(Boolean);
const subscribe = (params.get('subscribe') ?? listen.join(',')).split(',').filter(Boolean);

window.received = [];
const twine = new TwineClientLibrary(params.get('server') ?? location.origin);
for (const room of listen) {
  twine.listenOn(room, (message) => window.received.push(message));
}
const waiting = setInterval(() => {
  if (twine.socket?.connected) {
    clearInterval(waiting);
    for (const room of subscribe) twine.subscribe(room);
    window.subscribed = true;
  }
}, 20);
window.twine = twine;
window.transport = () => twine.socket?.io?.engine?.transport?.name;
