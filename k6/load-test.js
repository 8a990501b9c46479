// Basic load test (seed 003): users ramp 1 → 5 → 10 → 15 over ~13 minutes, each sending chat
// requests the way the UI (POST /api/chat, streamed) and API clients (POST /v1/chat/completions)
// do, with an occasional history read. Measures answer time, TTFT, errors and throughput.
//
//   k6 run -e BASE_URL=http://localhost:8080 k6/load-test.js
//   K6_PROFILE=smoke|load|stress, MAX_VUS, TEST_DURATION, K6_USERNAME/K6_PASSWORD, MAX_TOKENS
import { sleep } from 'k6';
import {
  SUMMARY_TREND_STATS,
  chatThresholds,
  completeChat,
  getChecked,
  loginOrFail,
  profileStages,
  streamChat,
  thinkTime,
  writeSummary,
} from './lib/helpers.js';

// The seed's stages: 1 → 5 → 10 → 15 users, then down (13 minutes).
const SEED_STAGES = [
  { duration: '1m', target: 1 },
  { duration: '2m', target: 5 },
  { duration: '3m', target: 10 },
  { duration: '2m', target: 15 },
  { duration: '3m', target: 15 },
  { duration: '2m', target: 0 },
];

export const options = {
  scenarios: {
    chat_load: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: profileStages(SEED_STAGES, 2),
      gracefulRampDown: '30s',
    },
  },
  thresholds: {
    ...chatThresholds(),
    checks: ['rate>0.99'],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { session: loginOrFail() };
}

export default function (data) {
  // Half the answers are streamed as the UI asks for them, half come whole as API clients
  // ask for them; both are "chat" for the answer-time thresholds.
  if (Math.random() < 0.5) {
    streamChat(data.session, { endpoint: 'chat' });
  } else {
    completeChat(data.session, { endpoint: 'chat' });
  }
  if (Math.random() < 0.2) {
    getChecked('/api/conversations?limit=10', data.session, 'read');
  }
  sleep(thinkTime(0.5, 1.5));
}

export function handleSummary(data) {
  return writeSummary('load-test', data);
}
