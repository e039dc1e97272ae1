// socket.io-client, with every connection held to HTTP long-polling.
import { io as connect } from '../demo/vendor/socket.io-client/socket.io.esm.min.js';

export * from '../demo/vendor/socket.io-client/socket.io.esm.min.js';

export function io(url, options = {}) {
  return connect(url, { ...options, transports: ['polling'] });
}
