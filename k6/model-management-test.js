// Model management test (seed 003): for ~10 minutes, users poll the model manager's read
// endpoints while an admin switches the served model back and forth and one user keeps
// chatting through the switches. Measures the switch success rate (> 90 %), the switch
// duration (POST /api/models/switch until /api/models/status reports the target running),
// the management API's responsiveness and chat errors during switches.
// Contract: docs/model-manager-api.md.
//
//   k6 run -e BASE_URL=http://localhost:8080 k6/model-management-test.js
//   MODEL_SWITCH_PROFILES=a,b   the two profiles to alternate between (default: the current one
//                               and the first other compatible profile the gateway recommends)
//   SWITCH_INTERVAL_S           pause between switches (default 30; smoke 1)
//   SWITCH_TIMEOUT_S            how long one switch may take (default 600)
//   K6_ADMIN_USERNAME / K6_ADMIN_PASSWORD   the admin who switches (default admin/admin123)
import http from 'k6/http';
import { check, fail, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import {
  ADMIN_CREDENTIALS,
  BASE_URL,
  PROFILE,
  SLA,
  SUMMARY_TREND_STATS,
  authed,
  jsonField,
  loginOrFail,
  profileDuration,
  profileVus,
  streamChat,
  thinkTime,
  writeSummary,
} from './lib/helpers.js';

const switchSuccess = new Rate('switch_success');
const switchDuration = new Trend('model_switch_duration', true);
const switchReportedDuration = new Trend('model_switch_reported_duration', true);
const switchOutcomes = new Counter('model_switches');
const statusOk = new Rate('model_status_ok');

const DURATION = profileDuration('10m', '8s');
const SWITCH_INTERVAL_S = Number(__ENV.SWITCH_INTERVAL_S || (PROFILE === 'smoke' ? 1 : 30));
const SWITCH_TIMEOUT_S = Number(__ENV.SWITCH_TIMEOUT_S || 600);
const POLL_S = 0.25;
const STATUSES = ['stopped', 'starting', 'loading', 'running', 'switching', 'error'];

export const options = {
  scenarios: {
    status_polling: {
      executor: 'constant-vus',
      exec: 'statusPolling',
      vus: profileVus(2, 1),
      duration: DURATION,
    },
    switching: {
      executor: 'constant-vus',
      exec: 'switching',
      vus: 1,
      duration: DURATION,
      gracefulStop: `${SWITCH_TIMEOUT_S}s`,
    },
    chat_during_switch: {
      executor: 'constant-vus',
      exec: 'chatDuringSwitch',
      vus: 1,
      duration: DURATION,
    },
  },
  thresholds: {
    switch_success: [`rate>${SLA.switchSuccessRate}`],
    model_switch_duration: [`p(95)<${SLA.switchDurationP95}`],
    model_status_ok: ['rate>0.99'],
    'http_req_duration{endpoint:models}': [`p(95)<${SLA.apiP95}`],
    'http_req_failed{endpoint:models}': [`rate<${SLA.errorRate}`],
    'stream_errors{scenario:chat_during_switch}': [`rate<${SLA.streamErrorRate}`],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

function modelsGet(path, shared, credentials) {
  return authed('GET', path, null, shared, { endpoint: 'models', name: `GET ${path}` }, credentials);
}

function readStatus(shared, credentials) {
  const res = modelsGet('/api/models/status', shared, credentials);
  return res.status === 200 ? res.json() : null;
}

function pickProfiles(status, recommendations) {
  if (__ENV.MODEL_SWITCH_PROFILES) {
    const ids = __ENV.MODEL_SWITCH_PROFILES.split(',').map((s) => s.trim()).filter(Boolean);
    if (ids.length !== 2) fail('MODEL_SWITCH_PROFILES must name two profiles: a,b');
    return ids;
  }
  const current = status.current_profile;
  const candidates = [
    ...((recommendations && recommendations.recommended_profiles) || []),
    ...((recommendations && recommendations.compatible_profiles) || []),
  ].filter((id) => id !== current && !/broken/.test(id));
  if (!current || candidates.length === 0) {
    fail('no two compatible profiles to switch between; set MODEL_SWITCH_PROFILES=a,b');
  }
  return [current, candidates[0]];
}

export function setup() {
  const session = loginOrFail();
  const admin = loginOrFail(ADMIN_CREDENTIALS);
  const statusRes = modelsGet('/api/models/status', admin, ADMIN_CREDENTIALS);
  if (statusRes.status === 404) fail(`${BASE_URL} has no model manager (/api/models/status is 404)`);
  let status = statusRes.json();
  // A model still starting (or a switch someone else began) refuses the first switch with 409:
  // begin measuring once the current model runs.
  const readyBy = Date.now() + SWITCH_TIMEOUT_S * 1000;
  while (status.status !== 'running' && Date.now() < readyBy) {
    if (status.status === 'error') fail(`the current model is in error: ${JSON.stringify(status.switch)}`);
    sleep(POLL_S);
    status = modelsGet('/api/models/status', admin, ADMIN_CREDENTIALS).json();
  }
  if (status.status !== 'running') fail(`the current model is not running after ${SWITCH_TIMEOUT_S}s: ${status.status}`);
  const recommendations = modelsGet('/api/models/hardware-recommendations', admin, ADMIN_CREDENTIALS).json();
  const profiles = pickProfiles(status, recommendations);

  // Only admins switch; unknown profiles are refused.
  const asUser = authed('POST', '/api/models/switch', { profile_id: profiles[1] }, session, {
    endpoint: 'models_refused',
    name: 'POST /api/models/switch (user)',
  }, undefined, { responseCallback: http.expectedStatuses(403) });
  const unknown = authed('POST', '/api/models/switch', { profile_id: 'no-such-profile-k6' }, admin, {
    endpoint: 'models_refused',
    name: 'POST /api/models/switch (unknown)',
  }, ADMIN_CREDENTIALS, { responseCallback: http.expectedStatuses(404) });
  check(asUser, { 'switch as user: 403': (r) => r.status === 403 });
  check(unknown, { 'switch to unknown profile: 404': (r) => r.status === 404 });
  return { session, admin, profiles, original: status.current_profile };
}

export function statusPolling(data) {
  const res = modelsGet('/api/models/status', data.session);
  const body = res.status === 200 ? res.json() : {};
  statusOk.add(
    check(res, {
      'status: 200': (r) => r.status === 200,
      'status: known state': () => STATUSES.includes(body.status),
      'status: profiles listed': () => typeof body.available_profiles === 'object' && body.available_profiles !== null,
      'status: hardware info': () => typeof body.hardware_info === 'object' && body.hardware_info !== null,
    }),
  );
  const profiles = modelsGet('/api/models/profiles', data.session);
  check(profiles, {
    'profiles: 200': (r) => r.status === 200,
    'profiles: listed': (r) => typeof jsonField(r, 'profiles') === 'object',
  });
  const hw = modelsGet('/api/models/hardware-recommendations', data.session);
  check(hw, {
    'recommendations: 200': (r) => r.status === 200,
    'recommendations: compatible list': (r) => Array.isArray(jsonField(r, 'compatible_profiles')),
  });
  // The served models: 503 with Retry-After while a switch has the model server down.
  const models = authed('GET', '/api/models', null, data.session, {
    endpoint: 'models_served',
    name: 'GET /api/models',
  }, undefined, { responseCallback: http.expectedStatuses(200, 503) });
  check(models, {
    'models: 200, or 503 + Retry-After while switching': (r) =>
      r.status === 200 || (r.status === 503 && !!r.headers['Retry-After']),
  });
  sleep(thinkTime(1, 2));
}

// Switch to `target` and wait until the status settles; returns {ok, ms, status}.
function switchTo(data, target) {
  const started = Date.now();
  const res = authed('POST', '/api/models/switch', { profile_id: target }, data.admin, {
    endpoint: 'models_switch',
    name: 'POST /api/models/switch',
  }, ADMIN_CREDENTIALS);
  const accepted = check(res, {
    'switch: 202 accepted': (r) => r.status === 202,
    'switch: status switching': (r) => jsonField(r, 'status') === 'switching',
  });
  if (!accepted) return { ok: false, ms: Date.now() - started, status: null, accepted };
  const deadline = started + SWITCH_TIMEOUT_S * 1000;
  let status = null;
  while (Date.now() < deadline) {
    sleep(POLL_S);
    status = readStatus(data.admin, ADMIN_CREDENTIALS);
    const sw = status && status.switch;
    if (sw && sw.target === target && (sw.phase === 'running' || sw.phase === 'failed')) break;
  }
  const ms = Date.now() - started;
  const sw = status && status.switch;
  const ok =
    !!sw && sw.target === target && sw.phase === 'running' &&
    status.current_profile === target && status.status === 'running';
  return { ok, ms, status, accepted };
}

export function switching(data) {
  const status = readStatus(data.admin, ADMIN_CREDENTIALS);
  const current = status ? status.current_profile : data.profiles[0];
  const target = current === data.profiles[0] ? data.profiles[1] : data.profiles[0];
  const startedAt = Date.now();
  const result = switchTo(data, target);
  switchSuccess.add(result.ok, { target });
  switchOutcomes.add(1, { target, outcome: result.ok ? 'success' : 'failed' });
  check(null, { 'switch: target running': () => result.ok });
  if (result.accepted) {
    switchDuration.add(result.ms, { target });
    // The gateway's own measure of the same switch: the latest history entry to the target.
    const history = ((result.status && result.status.history) || []).filter(
      (h) => h.to_profile === target && typeof h.duration_s === 'number',
    );
    history.sort((a, b) => String(a.started_at).localeCompare(String(b.started_at)));
    const last = history[history.length - 1];
    if (last && Date.parse(last.started_at) >= startedAt - 5000) {
      switchReportedDuration.add(last.duration_s * 1000, { target });
    }
  }
  sleep(SWITCH_INTERVAL_S);
}

export function chatDuringSwitch(data) {
  streamChat(data.session, { path: '/api/chat', endpoint: 'ui_stream' });
  sleep(thinkTime(0.5, 1.5));
}

// Leave the stack serving the profile it served before the test.
export function teardown(data) {
  if (!data || !data.original) return;
  const deadline = Date.now() + SWITCH_TIMEOUT_S * 1000;
  let status = readStatus(data.admin, ADMIN_CREDENTIALS);
  while (status && status.status === 'switching' && Date.now() < deadline) {
    sleep(POLL_S);
    status = readStatus(data.admin, ADMIN_CREDENTIALS);
  }
  if (status && status.current_profile !== data.original) {
    const back = switchTo(data, data.original);
    check(null, { 'teardown: original profile restored': () => back.ok });
  }
}

export function handleSummary(data) {
  return writeSummary('model-management-test', data);
}
