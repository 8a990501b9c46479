// Shared helpers for every k6 script of the suite: configuration from the environment,
// load profiles (smoke | load | stress), authentication, chat requests, SSE parsing,
// checks and the end-of-test summary files. Scripts import from here; nothing is copied.
import http from 'k6/http';
import { check, fail } from 'k6';
import encoding from 'k6/encoding';
import crypto from 'k6/crypto';
import { Counter, Rate, Trend } from 'k6/metrics';

// ---------------------------------------------------------------- configuration

export const BASE_URL = (__ENV.BASE_URL || 'http://localhost:8080').replace(/\/+$/, '');
export const PROFILE = (__ENV.K6_PROFILE || 'load').toLowerCase();
if (!['smoke', 'load', 'stress'].includes(PROFILE)) {
  throw new Error(`K6_PROFILE must be smoke, load or stress (got "${PROFILE}")`);
}

export const CREDENTIALS = {
  username: __ENV.K6_USERNAME || __ENV.TEST_EMAIL || 'test',
  password: __ENV.K6_PASSWORD || __ENV.TEST_PASSWORD || 'test',
};
export const ADMIN_CREDENTIALS = {
  username: __ENV.K6_ADMIN_USERNAME || 'admin',
  password: __ENV.K6_ADMIN_PASSWORD || 'admin123',
};

export const MODEL = __ENV.K6_MODEL || 'current';
export const MAX_TOKENS = intEnv('MAX_TOKENS', 32);
export const REQUEST_TIMEOUT = __ENV.K6_REQUEST_TIMEOUT || '120s';

function intEnv(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = parseInt(raw, 10);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a number (got "${raw}")`);
  return value;
}

function numEnv(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value)) throw new Error(`${name} must be a number (got "${raw}")`);
  return value;
}

// The seed's targets (SPEC §11); each can be overridden from the environment.
export const SLA = {
  ttftP95: numEnv('TTFT_THRESHOLD', 2000),
  chatP50: numEnv('RESPONSE_TIME_P50', 1500),
  chatP95: numEnv('RESPONSE_TIME_P95', 3000),
  chatP99: numEnv('RESPONSE_TIME_P99', 5000),
  errorRate: numEnv('ERROR_RATE_THRESHOLD', numEnv('ERROR_THRESHOLD', 0.01)),
  streamErrorRate: numEnv('STREAM_ERROR_THRESHOLD', 0.05),
  apiP95: numEnv('API_RESPONSE_TIME_P95', 5000),
  switchSuccessRate: numEnv('SWITCH_SUCCESS_THRESHOLD', 0.9),
  switchDurationP95: numEnv('SWITCH_DURATION_P95', 300000),
};

// The seed's chat thresholds on the chat requests (tagged endpoint=chat), the TTFT trend and
// the error rates. Scripts add their own on top.
export function chatThresholds(withTtft = true) {
  const thresholds = {
    'http_req_duration{endpoint:chat}': [
      `p(50)<${SLA.chatP50}`,
      `p(95)<${SLA.chatP95}`,
      `p(99)<${SLA.chatP99}`,
    ],
    http_req_failed: [`rate<${SLA.errorRate}`],
  };
  if (withTtft) thresholds.ttft = [`p(95)<${SLA.ttftP95}`];
  return thresholds;
}

export function streamingThresholds() {
  return {
    ttft: [`p(95)<${SLA.ttftP95}`],
    stream_errors: [`rate<${SLA.streamErrorRate}`],
    'http_req_failed{kind:stream}': [`rate<${SLA.streamErrorRate}`],
  };
}

export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)', 'count'];

// ---------------------------------------------------------------- durations and stages

export function parseDuration(text) {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/g;
  const units = { ms: 1, s: 1000, m: 60000, h: 3600000 };
  let total = 0;
  let consumed = '';
  let match;
  while ((match = re.exec(text)) !== null) {
    total += parseFloat(match[1]) * units[match[2]];
    consumed += match[0];
  }
  if (!text || consumed !== String(text).trim()) throw new Error(`not a duration: "${text}"`);
  return total;
}

export function formatDuration(ms) {
  return `${Math.max(1, Math.round(ms / 1000))}s`;
}

function peakOf(stages) {
  return stages.reduce((max, s) => Math.max(max, s.target), 0);
}

// The stages of one script for the chosen profile.
//   load:   the seed's stages (the default).
//   stress: the seed's stages with twice the users, plus a spike at three times the peak.
//   smoke:  about 8 s: a couple of users, enough for every request kind and threshold.
// MAX_VUS rescales the targets so that the peak equals it; TEST_DURATION rescales the stage
// durations so that they add up to it.
export function profileStages(seedStages, smokePeak = 2) {
  let stages;
  if (PROFILE === 'smoke') {
    stages = [
      { duration: '2s', target: smokePeak },
      { duration: '5s', target: smokePeak },
      { duration: '1s', target: 0 },
    ];
  } else if (PROFILE === 'stress') {
    const peak = peakOf(seedStages);
    stages = seedStages.map((s) => ({ duration: s.duration, target: s.target * 2 }));
    stages.splice(stages.length - 1, 0, { duration: '1m', target: peak * 3 });
  } else {
    stages = seedStages.map((s) => ({ ...s }));
  }
  if (__ENV.MAX_VUS) {
    const wanted = intEnv('MAX_VUS', 0);
    const peak = peakOf(stages);
    if (wanted > 0 && peak > 0) {
      stages = stages.map((s) => ({
        duration: s.duration,
        target: s.target === 0 ? 0 : Math.max(1, Math.round((s.target * wanted) / peak)),
      }));
    }
  }
  if (__ENV.TEST_DURATION) {
    const wanted = parseDuration(__ENV.TEST_DURATION);
    const total = stages.reduce((sum, s) => sum + parseDuration(s.duration), 0);
    stages = stages.map((s) => ({
      duration: formatDuration((parseDuration(s.duration) * wanted) / total),
      target: s.target,
    }));
  }
  return stages;
}

export function stagesDuration(stages) {
  return stages.reduce((sum, s) => sum + parseDuration(s.duration), 0);
}

// A scenario's constant VU count for the profile (MAX_VUS caps it).
export function profileVus(loadVus, smokeVus = 1) {
  let vus = PROFILE === 'smoke' ? smokeVus : PROFILE === 'stress' ? loadVus * 2 : loadVus;
  if (__ENV.MAX_VUS) vus = Math.min(vus, Math.max(1, intEnv('MAX_VUS', vus)));
  return vus;
}

// A fixed duration for the profile (TEST_DURATION overrides it).
export function profileDuration(load, smoke = '7s') {
  if (__ENV.TEST_DURATION) return __ENV.TEST_DURATION;
  return PROFILE === 'smoke' ? smoke : load;
}

// ---------------------------------------------------------------- metrics

export const metrics = {
  ttft: new Trend('ttft', true),
  streamChunks: new Trend('stream_chunks'),
  streamErrors: new Rate('stream_errors'),
  chatErrors: new Rate('chat_errors'),
  completionTokens: new Counter('completion_tokens'),
  tokenRate: new Trend('tokens_per_second'),
  reauthentications: new Counter('reauthentications'),
};

// ---------------------------------------------------------------- authentication

function jsonParams(token, tags, extra = {}) {
  const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  return { headers, tags, timeout: REQUEST_TIMEOUT, ...extra };
}

// POST /api/auth/login; returns {token, expiresAt} or null.
export function login(credentials = CREDENTIALS, tags = {}) {
  const res = http.post(
    `${BASE_URL}/api/auth/login`,
    JSON.stringify({ username: credentials.username, password: credentials.password }),
    jsonParams(null, { endpoint: 'auth', name: 'POST /api/auth/login', ...tags }),
  );
  const ok = check(res, {
    'login: status 200': (r) => r.status === 200,
    'login: bearer token': (r) => r.status === 200 && typeof jsonField(r, 'access_token') === 'string',
  });
  if (!ok) return null;
  const expiresIn = Number(jsonField(res, 'expires_in')) || 1800;
  return { token: jsonField(res, 'access_token'), expiresAt: Date.now() + expiresIn * 1000 };
}

// For setup(): log in or stop the test with a clear message.
export function loginOrFail(credentials = CREDENTIALS) {
  const session = login(credentials, { phase: 'setup' });
  if (!session) {
    fail(`cannot log in to ${BASE_URL} as "${credentials.username}" (set K6_USERNAME/K6_PASSWORD)`);
  }
  return session;
}

// One session per VU: starts from the token logged in by setup() (token reuse); logs in again
// when the token is about to expire or the gateway answers 401 (expired or revoked token).
const vuSessions = {};

export function sessionToken(shared, credentials = CREDENTIALS) {
  const key = credentials.username;
  let session = vuSessions[key];
  if (!session && shared) session = vuSessions[key] = { ...shared };
  if (!session || session.expiresAt - Date.now() < 60000) {
    const fresh = login(credentials);
    if (fresh) {
      metrics.reauthentications.add(1);
      session = vuSessions[key] = fresh;
    }
  }
  return session ? session.token : null;
}

// After a 401 the token is useless whatever its expiry says (revoked, secret rotated): the
// next sessionToken() logs in afresh instead of falling back to setup()'s token.
function forgetSession(credentials) {
  vuSessions[credentials.username] = { token: null, expiresAt: 0 };
}

// A request with the VU's token; on 401 the VU logs in again and retries once.
export function authed(method, path, body, shared, tags, credentials = CREDENTIALS, extra = {}) {
  const send = () =>
    http.request(
      method,
      `${BASE_URL}${path}`,
      body === null || body === undefined ? null : JSON.stringify(body),
      jsonParams(sessionToken(shared, credentials), tags, extra),
    );
  let res = send();
  if (res.status === 401) {
    forgetSession(credentials);
    res = send();
  }
  return res;
}

function b64urlJson(obj) {
  return encoding.b64encode(JSON.stringify(obj), 'rawurl');
}

export function decodeJwtClaims(token) {
  const part = String(token).split('.')[1];
  return JSON.parse(encoding.b64decode(part, 'rawurl', 's'));
}

// A token that is expired. Signed with the real secret when K6_JWT_SECRET is known (so only
// the expiry makes it invalid), otherwise with a wrong key (invalid for two reasons).
export function expiredToken(validToken) {
  const claims = decodeJwtClaims(validToken);
  const now = Math.floor(Date.now() / 1000);
  claims.iat = now - 7200;
  claims.exp = now - 3600;
  const head = b64urlJson({ alg: 'HS256', typ: 'JWT' });
  const body = b64urlJson(claims);
  const secret = __ENV.K6_JWT_SECRET || 'not-the-gateway-secret-k6-expired-token';
  const signature = crypto.hmac('sha256', secret, `${head}.${body}`, 'base64rawurl');
  return `${head}.${body}.${signature}`;
}

// A well-formed token whose signature does not match.
export function tamperedToken(validToken) {
  const [head, body, signature] = String(validToken).split('.');
  const flipped = (signature[0] === 'A' ? 'B' : 'A') + signature.slice(1);
  return `${head}.${body}.${flipped}`;
}

// ---------------------------------------------------------------- chat

const PROMPTS = [
  'What is the capital of France?',
  'Explain what an HTTP status code 429 means in one paragraph.',
  'Give me three tips for writing clear commit messages.',
  'Summarise the difference between TCP and UDP.',
  'Write a haiku about load testing.',
  'How do I reverse a list in Python?',
  'What does a reverse proxy do?',
  'Name two benefits of server-sent events.',
];

export function randomPrompt() {
  return PROMPTS[Math.floor(Math.random() * PROMPTS.length)];
}

export function chatBody(stream, prompt = randomPrompt(), extra = {}) {
  return {
    model: MODEL,
    messages: [{ role: 'user', content: prompt }],
    max_tokens: MAX_TOKENS,
    stream,
    ...extra,
  };
}

// Parse an SSE body (k6 reads it whole) into its data payloads.
export function parseSSE(body) {
  const result = { events: [], chunks: 0, done: false, error: null, content: '', usage: null, invalid: 0 };
  if (typeof body !== 'string') return result;
  const lines = body.split('\n');
  for (const raw of lines) {
    const line = raw.replace(/\r$/, '');
    if (!line.startsWith('data:')) continue;
    const payload = line.slice(5).trim();
    if (payload === '[DONE]') {
      result.done = true;
      continue;
    }
    let event;
    try {
      event = JSON.parse(payload);
    } catch (e) {
      result.invalid += 1;
      continue;
    }
    result.events.push(event);
    if (event.error) result.error = event.error;
    if (event.usage) result.usage = event.usage;
    const choice = event.choices && event.choices[0];
    const delta = choice && choice.delta && choice.delta.content;
    if (delta) {
      result.chunks += 1;
      result.content += delta;
    }
  }
  return result;
}

// A streaming chat (POST /api/chat by default, or /v1/chat/completions): records TTFT
// (time to first byte: the gateway sends its headers with the first upstream event, so it is
// the time to the first SSE data line), chunk count, tokens and stream errors.
export function streamChat(shared, opts = {}) {
  const path = opts.path || '/api/chat';
  const endpoint = opts.endpoint || 'chat_stream';
  const res = authed('POST', path, chatBody(true, opts.prompt, opts.body), shared, {
    endpoint,
    kind: 'stream',
    name: `POST ${path} (stream)`,
    ...(opts.tags || {}),
  });
  const sse = res.status === 200 ? parseSSE(res.body) : parseSSE('');
  const firstIsData = res.status === 200 && /^data:/.test(String(res.body || '').trimStart());
  const ok = check(res, {
    'stream: status 200': (r) => r.status === 200,
    'stream: event-stream': (r) => String(r.headers['Content-Type'] || '').startsWith('text/event-stream'),
    'stream: first line is data': () => firstIsData,
    'stream: has chunks': () => sse.chunks > 0,
    'stream: ends with [DONE]': () => sse.done,
    'stream: no error event': () => sse.error === null && sse.invalid === 0,
  });
  if (firstIsData) metrics.ttft.add(res.timings.waiting, { endpoint });
  if (res.status === 200) metrics.streamChunks.add(sse.chunks, { endpoint });
  metrics.streamErrors.add(!ok, { endpoint });
  recordTokens(sse.usage, res, endpoint);
  return { res, sse, ok };
}

// A non-streaming chat answer (POST /v1/chat/completions or /api/chat with stream:false).
export function completeChat(shared, opts = {}) {
  const path = opts.path || '/v1/chat/completions';
  const endpoint = opts.endpoint || 'chat';
  const res = authed('POST', path, chatBody(false, opts.prompt, opts.body), shared, {
    endpoint,
    kind: 'chat',
    name: `POST ${path}`,
    ...(opts.tags || {}),
  });
  const content = res.status === 200 ? jsonField(res, 'choices.0.message.content') : null;
  const ok = check(res, {
    'chat: status 200': (r) => r.status === 200,
    'chat: has an answer': () => typeof content === 'string' && content.length > 0,
  });
  metrics.chatErrors.add(!ok, { endpoint });
  // Non-streamed: the first byte comes with the whole answer, so no TTFT sample here.
  recordTokens(res.status === 200 ? jsonField(res, 'usage') : null, res, endpoint);
  return { res, ok };
}

function recordTokens(usage, res, endpoint) {
  if (!usage || typeof usage.completion_tokens !== 'number') return;
  metrics.completionTokens.add(usage.completion_tokens, { endpoint });
  const seconds = res.timings.duration / 1000;
  if (seconds > 0) metrics.tokenRate.add(usage.completion_tokens / seconds, { endpoint });
}

// ---------------------------------------------------------------- small utilities

export function jsonField(res, selector) {
  try {
    return res.json(selector);
  } catch (e) {
    return undefined;
  }
}

// A GET with the VU's token, checked for the expected status.
export function getChecked(path, shared, endpoint, expected = 200, credentials = CREDENTIALS) {
  const res = authed('GET', path, null, shared, { endpoint, name: `GET ${path.split('?')[0]}` }, credentials);
  check(res, { [`${endpoint}: GET ${path.split('?')[0]} ${expected}`]: (r) => r.status === expected });
  return res;
}

export function thinkTime(minS = 0.5, maxS = 2) {
  if (PROFILE === 'smoke') return 0.2;
  return minS + Math.random() * (maxS - minS);
}

// ---------------------------------------------------------------- summary

// handleSummary for every script: the full summary as JSON (K6_SUMMARY_DIR or k6/results
// when run from the repo), plus a short text summary on stdout.
export function writeSummary(script, data) {
  const dir = (__ENV.K6_SUMMARY_DIR || '').replace(/\/+$/, '');
  const enriched = {
    script,
    profile: PROFILE,
    base_url: BASE_URL,
    finished_at: new Date().toISOString(),
    ...data,
  };
  const out = { stdout: textSummary(script, data) };
  if (dir) out[`${dir}/${script}.summary.json`] = JSON.stringify(enriched, null, 1);
  if (__ENV.K6_SUMMARY_FILE) out[__ENV.K6_SUMMARY_FILE] = JSON.stringify(enriched, null, 1);
  return out;
}

function fmtValue(metric, key, value) {
  if (typeof value !== 'number') return String(value);
  if (metric.type === 'rate') return `${(value * 100).toFixed(2)}%`;
  if (metric.contains === 'time') return value >= 1000 ? `${(value / 1000).toFixed(2)}s` : `${value.toFixed(1)}ms`;
  return Number.isInteger(value) ? String(value) : value.toFixed(2);
}

export function textSummary(script, data) {
  const lines = [``, `== ${script} (profile ${PROFILE}, ${BASE_URL}) ==`];
  const names = Object.keys(data.metrics).sort();
  let failed = 0;
  lines.push('thresholds:');
  for (const name of names) {
    const metric = data.metrics[name];
    for (const [expr, result] of Object.entries(metric.thresholds || {})) {
      if (!result.ok) failed += 1;
      lines.push(`  ${result.ok ? 'PASS' : 'FAIL'}  ${name}  ${expr}`);
    }
  }
  lines.push('metrics:');
  for (const name of names) {
    const metric = data.metrics[name];
    if (name.includes('{') && !metric.thresholds) continue;
    const shown = Object.entries(metric.values)
      .filter(([k]) => ['avg', 'med', 'p(95)', 'p(99)', 'max', 'rate', 'count', 'value', 'passes', 'fails'].includes(k))
      .filter(([k]) => metric.type !== 'rate' || k === 'rate')
      .map(([k, v]) => `${k}=${k === 'count' ? v : fmtValue(metric, k, v)}`)
      .join(' ');
    if (metric.type === 'rate') {
      const total = metric.values.passes + metric.values.fails;
      lines.push(`  ${name.padEnd(44)} ${shown} (${metric.values.passes} of ${total})`);
      continue;
    }
    lines.push(`  ${name.padEnd(44)} ${shown}`);
  }
  lines.push(failed ? `${failed} threshold(s) FAILED` : 'all thresholds passed', '');
  return lines.join('\n');
}
