// Auth flow test (seed 003): log in once in setup() and reuse the token across every VU and
// iteration (token check, profile, a chat answer), log in afresh now and then, and make sure
// that invalid, tampered, expired and missing tokens are refused with 401 and the error body.
// A VU whose token stops working (401) logs in again and retries once (lib/helpers.js).
//
//   k6 run -e BASE_URL=http://localhost:8080 k6/auth-flow-test.js
//   K6_JWT_SECRET (optional): sign the expired token with the real secret, so that only its
//   expiry is wrong; without it the expired token also carries a wrong signature.
import http from 'k6/http';
import { check, fail, sleep } from 'k6';
import { Rate, Trend } from 'k6/metrics';
import {
  BASE_URL,
  CREDENTIALS,
  SLA,
  SUMMARY_TREND_STATS,
  chatThresholds,
  completeChat,
  expiredToken,
  jsonField,
  login,
  loginOrFail,
  profileStages,
  sessionToken,
  tamperedToken,
  thinkTime,
  writeSummary,
} from './lib/helpers.js';

const rejectedProperly = new Rate('auth_rejections_ok');
const tokenReuseOk = new Rate('token_reuse_ok');
const loginDuration = new Trend('login_duration', true);

const SEED_STAGES = [
  { duration: '30s', target: 2 },
  { duration: '2m', target: 5 },
  { duration: '30s', target: 0 },
];

export const options = {
  scenarios: {
    auth_flow: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: profileStages(SEED_STAGES, 2),
      gracefulRampDown: '30s',
    },
  },
  thresholds: {
    ...chatThresholds(false), // whole answers only: no TTFT here
    auth_rejections_ok: ['rate>0.99'],
    token_reuse_ok: ['rate>0.99'],
    login_duration: ['p(95)<2000'],
    'http_req_duration{endpoint:auth}': [`p(95)<${SLA.apiP95}`],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

const EXPECT_401 = http.expectedStatuses(401);

function expectRejected(label, token) {
  const headers = { Accept: 'application/json' };
  if (token !== null) headers.Authorization = token;
  const res = http.get(`${BASE_URL}/api/auth/verify`, {
    headers,
    tags: { endpoint: 'auth_reject', name: `GET /api/auth/verify (${label})` },
    responseCallback: EXPECT_401,
  });
  const ok = check(res, {
    [`${label}: 401`]: (r) => r.status === 401,
    [`${label}: error body`]: (r) => typeof jsonField(r, 'error.code') === 'string',
  });
  rejectedProperly.add(ok, { case: label });
  return ok;
}

export function setup() {
  const session = loginOrFail();
  // A wrong password is refused (once only: the gateway throttles failed logins per client).
  const wrong = http.post(
    `${BASE_URL}/api/auth/login`,
    JSON.stringify({ username: CREDENTIALS.username, password: `${CREDENTIALS.password}-wrong` }),
    {
      headers: { 'Content-Type': 'application/json' },
      tags: { endpoint: 'auth_reject', name: 'POST /api/auth/login (wrong password)' },
      responseCallback: EXPECT_401,
    },
  );
  const ok = check(wrong, { 'wrong password: 401': (r) => r.status === 401 });
  rejectedProperly.add(ok, { case: 'wrong password' });
  if (!ok && wrong.status !== 429) fail(`wrong password answered ${wrong.status}`);
  return { session };
}

export default function (data) {
  // Token reuse: the token from setup() (shared by every VU) keeps working.
  const token = sessionToken(data.session);
  const verify = http.get(`${BASE_URL}/api/auth/verify`, {
    headers: { Authorization: `Bearer ${token}` },
    tags: { endpoint: 'auth', name: 'GET /api/auth/verify' },
  });
  const reuse = check(verify, {
    'verify: 200': (r) => r.status === 200,
    'verify: same user': (r) => jsonField(r, 'username') === CREDENTIALS.username || CREDENTIALS.username.includes('@'),
  });
  tokenReuseOk.add(reuse);
  const me = http.get(`${BASE_URL}/api/auth/me`, {
    headers: { Authorization: `Bearer ${token}` },
    tags: { endpoint: 'auth', name: 'GET /api/auth/me' },
  });
  check(me, { 'me: 200': (r) => r.status === 200 });
  completeChat(data.session);

  // Refusals: a token must be exactly right and unexpired.
  expectRejected('tampered token', `Bearer ${tamperedToken(token)}`);
  expectRejected('expired token', `Bearer ${expiredToken(token)}`);
  expectRejected('garbage token', 'Bearer not-a-jwt');
  expectRejected('no token', null);

  // Now and then a fresh login, as a user opening the UI would.
  if (Math.random() < 0.1 || __ITER === 0) {
    const started = Date.now();
    const fresh = login();
    if (fresh) {
      loginDuration.add(Date.now() - started);
      const again = http.get(`${BASE_URL}/api/auth/verify`, {
        headers: { Authorization: `Bearer ${fresh.token}` },
        tags: { endpoint: 'auth', name: 'GET /api/auth/verify' },
      });
      check(again, { 'fresh token: 200': (r) => r.status === 200 });
    }
  }
  sleep(thinkTime(0.5, 1.5));
}

export function handleSummary(data) {
  return writeSummary('auth-flow-test', data);
}
