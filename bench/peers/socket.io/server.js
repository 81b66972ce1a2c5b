// The Socket.IO peer of shardcast's benchmarks: one single-threaded
// Socket.IO 4 server that serves both the echo and the rooms (fan-out)
// scenarios, written the way Socket.IO's docs show it.
//
// Usage: node server.js PORT
//
// It listens on 127.0.0.1:PORT, path /socket.io/, default namespace:
// - "echo" (data): the server emits "echo" with the same data back to the
//   sender;
// - "join" (room, ack): the socket joins room `room` (socket.join), then
//   acknowledges, when the client asked for it, so the client knows
//   publishes to the room reach it;
// - "publish" (room, data): the server emits "message" (data) to every
//   socket in `room` (io.to(room).emit), the publisher included if it
//   joined.
//
// Settings, from https://socket.io/docs/v4/performance-tuning/ and the
// server options reference:
// - bufferutil and utf-8-validate are installed: ws, Socket.IO's default
//   WebSocket engine, loads them by itself (masking and UTF-8 checks in
//   native code). The other tip there, another engine (eiows), is a native
//   addon that is not published for this Node; ws is what Socket.IO ships
//   and what its users run.
// - perMessageDeflate: false (the v4 default, stated here): no compression,
//   as for every other peer.
// - transports: both stay allowed (the default), so a client may start
//   with HTTP long-polling; the benchmark's clients connect with
//   `transport=websocket` directly, as `transports: ['websocket']` clients
//   do, and never poll.
// - The default parser: the benchmark sends text events only, and a
//   custom parser (msgpack) helps binary payloads, which are not used.
// - No connection-state recovery, no middleware, no acknowledgement but
//   the join's: nothing that the scenarios do not use.

import { createServer } from 'node:http';
import { Server } from 'socket.io';

const [portText, ...rest] = process.argv.slice(2);
const port = Number(portText);
if (rest.length > 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node server.js PORT');
  process.exit(2);
}

const httpServer = createServer();
const io = new Server(httpServer, {
  perMessageDeflate: false,
  // The benchmark's connections stay busy; the default ping interval
  // (25 s) and timeout (20 s) stand, and the client answers every ping.
});

io.on('connection', (socket) => {
  socket.on('echo', (data) => {
    socket.emit('echo', data);
  });
  socket.on('join', (room, ack) => {
    socket.join(room);
    if (typeof ack === 'function') {
      ack();
    }
  });
  socket.on('publish', (room, data) => {
    io.to(room).emit('message', data);
  });
});

httpServer.listen(port, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${port}`);
});
