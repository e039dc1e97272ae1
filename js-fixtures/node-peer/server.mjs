// A minimal Twine server on Node.js and socket.io 4.8: the same HTTP routes and Socket.IO events
// as the Rust server, so benchmarks can run the same scenarios against both.
//
// It is the throughput/memory peer, i.e. what a user would pick instead: live delivery only.
// There is NO recovery: no history, no sessions, no replay on reconnect. The `twineid` cookie is
// handed out for compatibility but never read back; `updateSessionTS` and `stateRecovery` are
// accepted and ignored. One process, no adapter.
//
// Environment: PORT (default 3006, 0 = a free port), TWINE_HOST (default 0.0.0.0),
// TWINE_API_KEY (default `test-key`). Prints `listening on <host>:<port>` once listening.
import { startPeer } from './contract.mjs';

startPeer();
