import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const frontendDir = resolve(here, '..');
const gatewayDir = resolve(frontendDir, '..', 'gateway');

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

async function waitFor<T>(what: string, deadlineMs: number, probe: () => Promise<T | undefined>, child: ChildProcess): Promise<T> {
  const deadline = Date.now() + deadlineMs;
  let last: unknown;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`the gateway exited (${child.exitCode}) while waiting for ${what}`);
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 150));
  }
  throw new Error(`timed out waiting for ${what}: ${String(last)}`);
}

/** Starts the real gateway (serving frontend/dist, spawning its simulator) for the e2e tests. */
export default async function globalSetup(): Promise<() => Promise<void>> {
  if (!existsSync(join(frontendDir, 'dist', 'index.html'))) {
    throw new Error('frontend/dist is missing: run `npx vite build` first');
  }
  const python = join(gatewayDir, '.venv', 'bin', 'python');
  const work = mkdtempSync(join(tmpdir(), 'vllm-chat-e2e-'));
  const [gatewayPort, vllmPort] = [await freePort(), await freePort()];
  const log = createWriteStream(join(frontendDir, 'test-results', 'gateway.log'), { flags: 'w' });
  const child = spawn(python, ['-m', 'app.cli', 'serve', '--host', '127.0.0.1', '--port', String(gatewayPort)], {
    cwd: gatewayDir,
    detached: true, // its own process group: the simulator it spawns goes down with it
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      ENVIRONMENT: 'local',
      DATABASE_URL: `sqlite+aiosqlite:///${join(work, 'e2e.sqlite')}`,
      REDIS_URL: '',
      JWT_SECRET: randomBytes(32).toString('hex'),
      GATEWAY_PORT: String(gatewayPort),
      VLLM_BASE_URL: `http://127.0.0.1:${vllmPort}/v1`,
      MODEL_DEFAULT_PROFILE: 'simulator',
      MODEL_LOG_DIR: join(work, 'model-logs'),
      UI_DIST_DIR: join(frontendDir, 'dist'),
      LOGIN_MAX_FAILURES: '1000',
    },
  });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  const base = `http://127.0.0.1:${gatewayPort}`;

  const stop = async () => {
    if (child.pid && child.exitCode === null) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // already gone
      }
      const deadline = Date.now() + 10_000;
      while (child.exitCode === null && child.signalCode === null && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
      }
      try {
        process.kill(-child.pid, 'SIGKILL'); // whatever of the group is still there
      } catch {
        // the whole group has exited
      }
    }
    log.end();
    rmSync(work, { recursive: true, force: true });
  };

  try {
    await waitFor('/health/live', 60_000, async () => ((await fetch(`${base}/health/live`)).ok ? true : undefined), child);
    const token = await waitFor('login', 10_000, async () => {
      const res = await fetch(`${base}/api/auth/login`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ username: 'admin', password: 'admin123' }),
      });
      return res.ok ? ((await res.json()) as { access_token: string }).access_token : undefined;
    }, child);
    await waitFor('the simulator profile to run', 60_000, async () => {
      const res = await fetch(`${base}/api/models/status`, { headers: { Authorization: `Bearer ${token}` } });
      const body = (await res.json()) as { status?: string };
      return body.status === 'running' ? true : undefined;
    }, child);
  } catch (err) {
    await stop();
    throw err;
  }
  process.env.E2E_BASE_URL = base;
  process.env.E2E_SIM_URL = `http://127.0.0.1:${vllmPort}`; // whichever simulator profile runs
  return stop;
}
