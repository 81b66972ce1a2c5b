// The uWebSockets.js peer of shardcast's echo benchmarks: a plain echo
// server written the way uWebSockets.js's EchoServer example does it, on
// Node's single thread, with compression off unless asked for.
//
// Usage: node server.js PORT [--compression]
//
// It listens on 127.0.0.1:PORT. `--compression` turns on permessage-deflate
// with uWebSockets.js's SHARED_COMPRESSOR, as its example does; without it
// no compression is offered.

import * as uWS from 'uws-pack';

const usage = 'usage: node server.js PORT [--compression]';
const [portText, ...flags] = process.argv.slice(2);
const port = Number(portText);
if (!Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(usage);
  process.exit(2);
}
let compression = uWS.DISABLED;
for (const flag of flags) {
  if (flag === '--compression') {
    compression = uWS.SHARED_COMPRESSOR;
  } else {
    console.error(usage);
    process.exit(2);
  }
}

uWS.App()
  .ws('/*', {
    compression,
    // The example's limit: 16 MiB messages.
    maxPayloadLength: 16 * 1024 * 1024,
    // No idle timeout: the memory benchmark holds silent connections for
    // minutes, and the other peers close no idle connection either.
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      // As in the example, the result is not looked at: a send that finds
      // backpressure still queues the message, and only one made while
      // more than maxBackpressure (64 KiB) waits is dropped, which the
      // benchmark's closed loop (one message in flight) never reaches.
      ws.send(message, isBinary);
    },
  })
  .any('/*', (res) => {
    res.writeStatus('404 Not Found').end();
  })
  .listen('127.0.0.1', port, (listenSocket) => {
    if (listenSocket) {
      console.log(`listening on 127.0.0.1:${port}`);
    } else {
      console.error(`could not listen on 127.0.0.1:${port}`);
      process.exit(1);
    }
  });
