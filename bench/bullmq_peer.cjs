'use strict';
/*
  BullMQ processing the bench's arrival stream (driven by bench/peer.py).

  Skill groups are queues (g0..), an arrival is a job with a priority (ours -2..5 ->
  BullMQ 8..1, 1 being served first), workers take jobs with concurrency = capacity and
  hold each for the handle time (0.5-1.5 x handle_ms), then complete it
  (removeOnComplete). Latency = add -> the processor starting the job (the analogue of
  arrive -> assigned). The producer is an open loop like the Python generator.

  usage: node bullmq_peer.cjs CONFIG.json
  CONFIG: {modules, url, prefix, queues, workers: [[queue, concurrency], ...],
           arrivals: [[queue, priority], ...], handle_ms, seed}
  stdin, one JSON object a line: {op: "step", target, warm_s, measure_s, tail_s}
  | {op: "quiesce", timeout_s} | {op: "quit"}; stdout: one JSON line per request, after
  {kind: "ready", ...}. Progress and errors go to stderr.
*/
const fs = require('fs');
const path = require('path');
const readline = require('readline');

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const { Queue, Worker } = require(path.join(cfg.modules, 'bullmq'));
const IORedis = require(path.join(cfg.modules, 'ioredis'));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const now = () => performance.now();
const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

let seed = cfg.seed >>> 0 || 1;
function random() {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return seed / 4294967296;
}

const st = {
  rate: 0, t0: 0, rateSent: 0, sent: 0, started: 0, next: 0, seq: 0,
  window: null, pending: new Map(), stop: false,
};

function percentile(sorted, q) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

async function processor(job) {
  const sent = job.data.t;
  st.pending.delete(job.data.n);
  st.started += 1;
  const w = st.window;
  if (w && sent >= w.start && sent < w.end) w.lat.push(now() - sent);
  await sleep(cfg.handle_ms * (0.5 + random()));
}

function setRate(perSecond) {
  st.rate = perSecond;
  st.t0 = now();
  st.rateSent = 0;
}

async function produce(queues) {
  while (!st.stop) {
    await sleep(5);
    const due = Math.max(0, Math.min(5000,
      Math.floor(((now() - st.t0) / 1000) * st.rate) - st.rateSent));
    if (!due) continue;
    st.rateSent += due;
    const byQueue = new Map();
    const t = now();
    for (let i = 0; i < due; i++) {
      const [g, p] = cfg.arrivals[st.next++ % cfg.arrivals.length];
      const n = st.seq++;
      st.pending.set(n, t);
      if (!byQueue.has(g)) byQueue.set(g, []);
      byQueue.get(g).push({
        name: 'c', data: { t, n },
        opts: { priority: 6 - p, removeOnComplete: true, removeOnFail: true },
      });
    }
    st.sent += due;
    await Promise.all([...byQueue].map(([g, jobs]) => queues[g].addBulk(jobs)));
  }
}

async function redisCpu(conn) {
  const info = await conn.info('cpu');
  const get = (name) => Number((info.match(new RegExp(`^${name}:([0-9.]+)`, 'm')) || [0, 0])[1]);
  return get('used_cpu_sys') + get('used_cpu_user');
}

async function backlog(queues) {
  const counts = await Promise.all(queues.map((q) => q.getJobCounts('wait', 'prioritized', 'paused')));
  return counts.reduce((sum, c) => sum + c.wait + c.prioritized + c.paused, 0);
}

async function marks(conn, queues) {
  const cpu = process.cpuUsage();
  return {
    t: now(), sent: st.sent, started: st.started, backlog: await backlog(queues),
    redis: await redisCpu(conn), own: (cpu.user + cpu.system) / 1e6,
  };
}

async function step(conn, queues, req) {
  setRate(req.target);
  await sleep(req.warm_s * 1000);
  const a = await marks(conn, queues);
  const w = (st.window = { start: now(), end: Infinity, lat: [] });
  await sleep(req.measure_s * 1000);
  w.end = now();
  const b = await marks(conn, queues);
  await sleep(req.tail_s * 1000);
  const t = now();
  let late = false;
  for (const sent of st.pending.values()) {
    if (sent >= w.start && sent < w.end) { w.lat.push(t - sent); late = true; }
  }
  st.window = null;
  w.lat.sort((x, y) => x - y);
  const secs = (b.t - a.t) / 1000;
  const done = Math.max(1, b.started - a.started);
  return {
    target: req.target, rate: (b.sent - a.sent) / secs, applied_rate: done / secs,
    backlog_start: a.backlog, backlog_end: b.backlog, lower_bound: late,
    latency: [0.5, 0.99, 0.999].map((q) => percentile(w.lat, q)),
    redis_cpu_us: ((b.redis - a.redis) / done) * 1e6, node_cpu_us: ((b.own - a.own) / done) * 1e6,
    seconds: secs,
  };
}

async function quiesce(queues, req) {
  setRate(0);
  const deadline = now() + req.timeout_s * 1000;
  while (now() < deadline) {
    if (st.pending.size === 0 && (await backlog(queues)) === 0) return { ok: true };
    await sleep(50);
  }
  return { ok: false };
}

async function main() {
  const conn = new IORedis(cfg.url, { maxRetriesPerRequest: null });
  const queues = [];
  for (let g = 0; g < cfg.queues; g++) {
    queues.push(new Queue('g' + g, { connection: conn, prefix: cfg.prefix }));
  }
  const t = now();
  const workers = cfg.workers.map(([g, concurrency]) => new Worker('g' + g, processor,
    { connection: conn, prefix: cfg.prefix, concurrency }));
  for (const w of workers) w.on('error', (err) => process.stderr.write(`worker: ${err}\n`));
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  const version = require(path.join(cfg.modules, 'bullmq', 'package.json')).version;
  say({ kind: 'ready', workers: workers.length, seconds: (now() - t) / 1000, version });
  const producer = produce(queues);
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const req = JSON.parse(line);
    if (req.op === 'step') say(await step(conn, queues, req));
    else if (req.op === 'quiesce') say(await quiesce(queues, req));
    else break;
  }
  // No graceful close: closing thousands of workers races their shared connection
  // (EPIPE), and the bench deletes every key under the prefix right after.
  st.stop = true;
  await producer;
  say({ kind: 'bye' });
  process.exit(0);
}

main().catch((err) => {
  process.stderr.write(`bullmq peer failed: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
