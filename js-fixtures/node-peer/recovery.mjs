// The Twine contract on socket.io 4.8 with connection state recovery and the default in-memory
// adapter: the one-process peer that also recovers. A client that reconnects within two minutes
// with the `pid` and last `offset` it was given (stock socket.io-client does this by itself) gets
// its rooms back and every packet of its rooms it missed; one process, so it must come back to
// this node.
//
// Environment: as server.mjs.
import { startPeer } from './contract.mjs';

startPeer({
  // The defaults of socket.io's documentation: two minutes away, middlewares skipped on recovery.
  options: { connectionStateRecovery: { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true } },
});
