// The Socket.IO Admin UI's side of `/admin`, as its pages speak it: a bcrypt hash for
// `--admin-password-hash` (bcryptjs, as the Admin UI's own server uses) and a connection that
// records every event it is sent.
import bcrypt from 'bcryptjs';
import { io } from 'socket.io-client';

/** A bcrypt hash of `password` (cost 4 unless given: tests need no strength). */
export const hashPassword = (password, cost = 4) => bcrypt.hashSync(password, cost);

/**
 * Connects to `${server.url}/admin` with `auth` ({username, password} or {sessionId}); resolves
 * once logged in, rejects with the connect error. Every event lands in `socket.received` as
 * `{event, args}`.
 */
export function connectAdmin(server, auth) {
  const socket = io(`${server.url}/admin`, { forceNew: true, reconnection: false, auth });
  socket.received = [];
  socket.onAny((event, ...args) => socket.received.push({ event, args }));
  return new Promise((resolve, reject) => {
    socket.once('connect', () => resolve(socket));
    socket.once('connect_error', (e) => {
      socket.close();
      reject(e);
    });
  });
}
