// Comprehensive test (seed 003): three scenarios in parallel for ~10 minutes, as real use mixes
// them: chat load (whole answers), streaming users (SSE) and API stability (a steady rate of
// the light read endpoints: health, models, token check, conversations, usage).
//
//   k6 run -e BASE_URL=http://localhost:8080 k6/comprehensive-test.js
import { sleep } from 'k6';
import {
  PROFILE,
  SLA,
  SUMMARY_TREND_STATS,
  completeChat,
  getChecked,
  loginOrFail,
  profileDuration,
  profileStages,
  streamChat,
  thinkTime,
  writeSummary,
} from './lib/helpers.js';

const CHAT_STAGES = [
  { duration: '1m', target: 2 },
  { duration: '3m', target: 5 },
  { duration: '4m', target: 8 },
  { duration: '2m', target: 0 },
];
const STREAM_STAGES = [
  { duration: '1m', target: 1 },
  { duration: '3m', target: 3 },
  { duration: '4m', target: 3 },
  { duration: '2m', target: 0 },
];
const API_RATE = PROFILE === 'smoke' ? 4 : 2; // requests per second

export const options = {
  scenarios: {
    chat_load: {
      executor: 'ramping-vus',
      exec: 'chatLoad',
      startVUs: 0,
      stages: profileStages(CHAT_STAGES, 2),
      gracefulRampDown: '30s',
    },
    streaming: {
      executor: 'ramping-vus',
      exec: 'streaming',
      startVUs: 0,
      stages: profileStages(STREAM_STAGES, 1),
      gracefulRampDown: '30s',
    },
    api_stability: {
      executor: 'constant-arrival-rate',
      exec: 'apiStability',
      rate: API_RATE,
      timeUnit: '1s',
      duration: profileDuration('10m', '8s'),
      preAllocatedVUs: 2,
      maxVUs: 10,
    },
  },
  thresholds: {
    'http_req_duration{scenario:chat_load}': [
      `p(50)<${SLA.chatP50}`,
      `p(95)<${SLA.chatP95}`,
      `p(99)<${SLA.chatP99}`,
    ],
    'http_req_failed{scenario:chat_load}': [`rate<${SLA.errorRate}`],
    ttft: [`p(95)<${SLA.ttftP95}`],
    stream_errors: [`rate<${SLA.streamErrorRate}`],
    'http_req_duration{scenario:api_stability}': [`p(95)<${SLA.apiP95}`],
    'http_req_failed{scenario:api_stability}': [`rate<${SLA.errorRate}`],
    'checks{scenario:api_stability}': ['rate>0.99'],
    http_req_failed: [`rate<${SLA.errorRate}`],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { session: loginOrFail() };
}

export function chatLoad(data) {
  completeChat(data.session, { path: Math.random() < 0.5 ? '/v1/chat/completions' : '/api/chat' });
  sleep(thinkTime(0.5, 1.5));
}

export function streaming(data) {
  streamChat(data.session, { path: '/api/chat', endpoint: 'ui_stream' });
  sleep(thinkTime(0.5, 1.5));
}

const API_CALLS = [
  ['/health', 'api'],
  ['/health/ready', 'api'],
  ['/api/models', 'api'],
  ['/v1/models', 'api'],
  ['/api/auth/verify', 'api'],
  ['/api/auth/me', 'api'],
  ['/api/conversations?limit=5', 'api'],
  ['/api/usage?group_by=day', 'api'],
];
let nextCall = 0;

export function apiStability(data) {
  const [path, endpoint] = API_CALLS[(nextCall += 1) % API_CALLS.length];
  getChecked(path, data.session, endpoint);
}

export function handleSummary(data) {
  return writeSummary('comprehensive-test', data);
}
