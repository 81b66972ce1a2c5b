// The Node `ws` peer of shardcast's echo benchmarks: a plain echo server
// written the way ws's README does it, on Node's single thread, with
// bufferutil installed (ws loads it by itself) and permessage-deflate off.
//
// Usage: node server.js PORT
//
// It listens on 127.0.0.1:PORT and sends every text or binary message
// back as it came.

import { WebSocketServer } from 'ws';

const [portText, ...rest] = process.argv.slice(2);
const port = Number(portText);
if (rest.length > 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
  console.error('usage: node server.js PORT');
  process.exit(2);
}

const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });

server.on('connection', (ws) => {
  ws.on('error', console.error);
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
});

server.on('listening', () => {
  console.log(`listening on 127.0.0.1:${port}`);
});
