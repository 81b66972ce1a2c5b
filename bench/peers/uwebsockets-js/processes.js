// Runs uWebSockets.js on several cores, the way its documentation scales
// it: one single-threaded process per core, all listening on the same
// port. uWebSockets.js sets SO_REUSEPORT on its listening sockets (unless
// asked for an exclusive port), so the kernel spreads new connections over
// the processes. Used by `shardcast-bench scaling`.
//
// Usage: node processes.js COUNT PORT [server.js flags]
//
// Process i runs `node server.js PORT [flags]` pinned to the i-th core
// this launcher may run on (its affinity, as `taskset -c` set it), round
// robin when there are fewer cores than processes. The launcher prints
// "listening" once every process listens, and stops them all and exits if
// any one exits. Run it as the leader of a process group (shardcast-bench
// does) so killing the group kills every process.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const usage = 'usage: node processes.js COUNT PORT [server.js flags]';
const [countText, portText, ...flags] = process.argv.slice(2);
const count = Number(countText);
const port = Number(portText);
if (!Number.isInteger(count) || count < 1 || !Number.isInteger(port) || port < 1 || port > 65535) {
  console.error(usage);
  process.exit(2);
}

// "0-2,5" -> [0, 1, 2, 5]
function allowedCores() {
  const status = readFileSync('/proc/self/status', 'utf8');
  const line = status.split('\n').find((l) => l.startsWith('Cpus_allowed_list:'));
  if (!line) throw new Error('no Cpus_allowed_list in /proc/self/status');
  return line.split(':')[1].trim().split(',').flatMap((part) => {
    const [low, high] = part.split('-').map(Number);
    const cores = [];
    for (let core = low; core <= (high ?? low); core += 1) cores.push(core);
    return cores;
  });
}

const cores = allowedCores();
const server = join(dirname(fileURLToPath(import.meta.url)), 'server.js');
const children = [];
let listening = 0;
for (let i = 0; i < count; i += 1) {
  const core = cores[i % cores.length];
  const child = spawn('taskset', ['-c', String(core), process.execPath, server, String(port), ...flags], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  child.stdout.on('data', (data) => {
    if (String(data).includes('listening') && ++listening === count) {
      console.log(`listening on 127.0.0.1:${port} with ${count} processes on cores ${cores.join(',')}`);
    }
  });
  child.on('exit', (code, signal) => {
    console.error(`process ${i} on core ${core} exited (${signal ?? code}); stopping the others`);
    for (const other of children) other.kill('SIGKILL');
    process.exit(1);
  });
  children.push(child);
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    for (const child of children) child.kill('SIGKILL');
    process.exit(0);
  });
}
