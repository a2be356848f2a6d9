'use strict';
// An allexmaster child written in Node.js: it registers with the master over
// gRPC on ALLEX_MASTER_SOCKET, serves HTTP on ALLEX_HTTP_PORT, reports ready
// (readiness "sdk"), serves allex.v1.Process on /tmp/allexprocess.<pid> so
// the master can ask it to shut down, and exits 0 on SIGTERM/SIGINT or
// Process.Shutdown.

const fs = require('fs');
const http = require('http');
const net = require('net');
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// How long one call to the master may take, and how long shutting down may
// take when nobody said (a signal carries no grace period).
const CALL_TIMEOUT_MS = 30000;
const DEFAULT_GRACE_MS = 5000;

function fail(msg) {
  console.error(`nodechild: ${msg}`);
  process.exit(1);
}

function parsePort(name) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') fail(`${name} is not set`);
  if (!/^[0-9]+$/.test(raw)) fail(`${name}: invalid port ${JSON.stringify(raw)}`);
  const n = Number(raw);
  if (n < 1 || n > 65535) fail(`${name}: invalid port ${n}: want 1..65535`);
  return n;
}

const env = {
  module: process.env.ALLEX_MODULE || '',
  instance: process.env.ALLEX_INSTANCE || '',
  httpPort: parsePort('ALLEX_HTTP_PORT'),
  masterSocket: process.env.ALLEX_MASTER_SOCKET || '',
};
if (!env.instance) fail('ALLEX_INSTANCE is not set');
if (!env.masterSocket) fail('ALLEX_MASTER_SOCKET is not set (not started by allexmaster?)');

// The well-known google/protobuf types the protos import are bundled with
// proto-loader (protobufjs), so only the repository's proto root is needed.
const protoRoot = path.join(__dirname, '..', '..', 'proto');
const packageDefinition = protoLoader.loadSync(
  ['allex/v1/machine.proto', 'allex/v1/process.proto'],
  { includeDirs: [protoRoot], longs: String, enums: String, defaults: true, oneofs: true },
);
const allex = grpc.loadPackageDefinition(packageDefinition).allex.v1;

const startedAt = Date.now();
const socketPath = `/tmp/allexprocess.${process.pid}`;
const master = new allex.MachineManager(`unix://${env.masterSocket}`, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + CALL_TIMEOUT_MS);
    master[method](request, { deadline }, (err, response) => {
      if (err) reject(new Error(`${method}: ${err.message}`));
      else resolve(response);
    });
  });
}

let shuttingDown = false;
let httpServer = null;
let processServer = null;

// Pids are reused: a socket file nobody answers on was left by a dead
// process and may be replaced; a live one is not ours to take.
function clearStaleSocket(p) {
  return new Promise((resolve, reject) => {
    let st;
    try {
      st = fs.lstatSync(p);
    } catch (err) {
      if (err.code === 'ENOENT') return resolve();
      return reject(err);
    }
    if (!st.isSocket()) return reject(new Error(`${p} exists and is not a socket`));
    const probe = net.connect(p);
    probe.setTimeout(2000);
    probe.on('connect', () => {
      probe.destroy();
      reject(new Error(`${p} is in use by a live process`));
    });
    const stale = () => {
      probe.destroy();
      try {
        fs.unlinkSync(p);
        resolve();
      } catch (err) {
        if (err.code === 'ENOENT') resolve();
        else reject(err);
      }
    };
    probe.on('error', stale);
    probe.on('timeout', stale);
  });
}

async function serveProcess() {
  await clearStaleSocket(socketPath);
  const server = new grpc.Server();
  server.addService(allex.Process.service, {
    Info(_call, cb) {
      cb(null, {
        module: env.module,
        instance: env.instance,
        pid: process.pid,
        ports: [{ protocol: 'PROTOCOL_HTTP', port: env.httpPort }],
        startedAt: { seconds: String(Math.floor(startedAt / 1000)), nanos: (startedAt % 1000) * 1e6 },
      });
    },
    Health(_call, cb) {
      cb(null, { healthy: true, message: '' });
    },
    Shutdown(call, cb) {
      const g = call.request.grace;
      const graceMs = g ? Number(g.seconds) * 1000 + Math.floor(g.nanos / 1e6) : 0;
      if (!(graceMs >= 0)) {
        cb({ code: grpc.status.INVALID_ARGUMENT, details: 'grace is negative' });
        return;
      }
      cb(null, {});
      // Answer first, then stop: the master is waiting for the reply.
      setImmediate(() => shutdown('Process.Shutdown', graceMs || DEFAULT_GRACE_MS));
    },
  });
  await new Promise((resolve, reject) => {
    server.bindAsync(`unix://${socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(new Error(`serve ${socketPath}: ${err.message}`));
      else resolve();
    });
  });
  // Owner and group only, like the Go library: Shutdown is not for everyone.
  fs.chmodSync(socketPath, 0o660);
  processServer = server;
}

function listenHTTP() {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
      res.end(`hello from node ${env.instance}\n`);
    });
    server.once('error', reject);
    // No host: all interfaces, like the Go library's Listen.
    server.listen(env.httpPort, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

function shutdown(reason, graceMs) {
  if (shuttingDown) return;
  shuttingDown = true;
  console.log(`nodechild: ${reason}: shutting down`);
  // Whatever hangs, the process leaves within the grace period.
  setTimeout(() => {
    console.error('nodechild: shutdown took too long, exiting');
    cleanupSocket();
    process.exit(1);
  }, graceMs).unref();
  const steps = [];
  if (httpServer) {
    steps.push(new Promise((resolve) => httpServer.close(() => resolve())));
    if (httpServer.closeIdleConnections) httpServer.closeIdleConnections();
  }
  if (processServer) {
    steps.push(new Promise((resolve) => processServer.tryShutdown(() => resolve())));
  }
  Promise.all(steps).then(() => {
    master.close();
    cleanupSocket();
    process.exit(0);
  });
}

function cleanupSocket() {
  try {
    fs.unlinkSync(socketPath);
  } catch (err) {
    if (err.code !== 'ENOENT') console.error(`nodechild: remove ${socketPath}: ${err.message}`);
  }
}

process.on('SIGTERM', () => shutdown('SIGTERM', DEFAULT_GRACE_MS));
process.on('SIGINT', () => shutdown('SIGINT', DEFAULT_GRACE_MS));

async function main() {
  await serveProcess();
  const reg = await call('Register', { instance: env.instance, pid: process.pid, processSocket: socketPath });
  console.log(`nodechild: registered as ${reg.process ? reg.process.instance : env.instance}`);
  const ports = await call('GetPorts', {});
  for (const inst of ports.instances) {
    const list = inst.ports.map((p) => `${p.protocol}=${p.port}`).join(' ');
    console.log(`nodechild: ports of ${inst.instance}: ${list}`);
  }
  httpServer = await listenHTTP();
  console.log(`nodechild: http on port ${env.httpPort}`);
  await call('ReportReady', {});
  console.log('nodechild: ready');
}

main().catch((err) => {
  console.error(`nodechild: ${err.message}`);
  cleanupSocket();
  process.exit(1);
});
