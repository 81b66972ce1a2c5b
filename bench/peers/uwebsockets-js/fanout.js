// The uWebSockets.js peer of shardcast's fan-out benchmarks: pub/sub with
// uWebSockets.js's topics (ws.subscribe, app.publish), written the way its
// PubSub example does it, on Node's single thread, compression off.
//
// Usage: node fanout.js PORT
//
// It listens on 127.0.0.1:PORT, any path. Its wire protocol, binary
// messages only (the "uws-topics" adapter of `shardcast-bench fanout`):
// - 'J' (0x4a), then the room name (1 to 255 bytes): subscribe to topic
//   ROOM; the server answers with the same message once subscribed, so
//   the client knows publishes to ROOM will reach it.
// - 'P' (0x50), one byte N, N bytes of room name, then the payload:
//   publish the payload to topic ROOM (app.publish, binary). Every
//   subscriber, the publisher included if it subscribed, receives the
//   payload alone as one binary message.
// Anything else closes the connection with 1008 (policy violation).

import * as uWS from 'uws-pack';

const J = 0x4a;
const P = 0x50;

const [portText, ...rest] = process.argv.slice(2);
const port = Number(portText);
if (rest.length > 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node fanout.js PORT');
  process.exit(2);
}

const app = uWS.App();
app
  .ws('/*', {
    compression: uWS.DISABLED,
    maxPayloadLength: 16 * 1024 * 1024,
    // maxBackpressure stays at its default (64 KiB): a delivery to a
    // subscriber with more than that queued is dropped, and the benchmark
    // counts it as lost, which is how a user of these defaults would see
    // it. No idle timeout, as in the echo peer.
    idleTimeout: 0,
    message: (ws, message, isBinary) => {
      const bytes = new Uint8Array(message);
      if (isBinary && bytes.length >= 2 && bytes[0] === J) {
        // Topics may be any ArrayBufferView: the room's bytes, uncopied.
        ws.subscribe(new Uint8Array(message, 1));
        ws.send(message, true);
      } else if (isBinary && bytes.length >= 2 && bytes[0] === P && bytes.length >= 2 + bytes[1]) {
        const end = 2 + bytes[1];
        // Views into the message, valid during this call; publish copies
        // what it keeps.
        app.publish(new Uint8Array(message, 2, bytes[1]), new Uint8Array(message, end), true);
      } else {
        ws.end(1008, 'unknown message');
      }
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
