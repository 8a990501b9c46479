// Streaming test (seed 003): 1 → 3 → 5 concurrent SSE streams over ~8 minutes, on the UI's
// POST /api/chat and on POST /v1/chat/completions with stream:true. Measures TTFT (the first
// SSE data line: the gateway sends its headers with the first upstream event, so k6's
// time-to-first-byte is the time to the first token), chunks per stream and stream errors
// (a non-200, a missing [DONE], an error event or a stream without content).
//
//   k6 run -e BASE_URL=http://localhost:8080 k6/streaming-test.js
import { sleep } from 'k6';
import {
  SLA,
  SUMMARY_TREND_STATS,
  loginOrFail,
  profileStages,
  streamChat,
  streamingThresholds,
  thinkTime,
  writeSummary,
} from './lib/helpers.js';

// The seed's stages: 1 → 3 → 5 concurrent streams, then down (8 minutes).
const SEED_STAGES = [
  { duration: '1m', target: 1 },
  { duration: '2m', target: 3 },
  { duration: '3m', target: 5 },
  { duration: '2m', target: 0 },
];

export const options = {
  scenarios: {
    streams: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: profileStages(SEED_STAGES, 2),
      gracefulRampDown: '30s',
    },
  },
  thresholds: {
    ...streamingThresholds(),
    'ttft{endpoint:ui_stream}': [`p(95)<${SLA.ttftP95}`],
    'ttft{endpoint:openai_stream}': [`p(95)<${SLA.ttftP95}`],
    stream_chunks: ['avg>0'],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { session: loginOrFail() };
}

export default function (data) {
  if (Math.random() < 0.7) {
    streamChat(data.session, { path: '/api/chat', endpoint: 'ui_stream' });
  } else {
    streamChat(data.session, {
      path: '/v1/chat/completions',
      endpoint: 'openai_stream',
      body: { stream_options: { include_usage: true } },
    });
  }
  sleep(thinkTime(0.5, 1.5));
}

export function handleSummary(data) {
  return writeSummary('streaming-test', data);
}
