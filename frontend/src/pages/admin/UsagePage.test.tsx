import { render, screen, within } from '@testing-library/react';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import type { UsageReport, UsageStats } from '../../api/types';
import { useLangStore } from '../../i18n';
import UsagePage from './UsagePage';

const base: UsageStats = {
  requests: 0,
  prompt_tokens: 0,
  completion_tokens: 0,
  errors: 0,
  cancelled: 0,
  errors_by_code: {},
  avg_ttft_ms: null,
  avg_latency_ms: null,
  p50_ttft_ms: null,
  p95_ttft_ms: null,
  p99_ttft_ms: null,
  p50_latency_ms: null,
  p95_latency_ms: null,
  p99_latency_ms: null,
};
// one runaway answer: the average says 43 s, the median says half a second
const totals: UsageStats = {
  ...base,
  requests: 107,
  prompt_tokens: 1000,
  completion_tokens: 2000,
  errors: 4,
  cancelled: 3,
  errors_by_code: { rate_limited: 2, upstream_error: 1, '500': 1 },
  avg_ttft_ms: 120,
  avg_latency_ms: 43_423,
  p50_ttft_ms: 101,
  p95_ttft_ms: 190,
  p99_ttft_ms: 2010,
  p50_latency_ms: 505,
  p95_latency_ms: 950.5,
  p99_latency_ms: 1414.3,
};

function report(group_by: string, groups: UsageReport['groups']): UsageReport {
  return { from: '2024-01-01T00:00:00Z', to: '2024-01-08T00:00:00Z', group_by, totals, groups };
}

const reportMock = vi.fn((query: { group_by: string }) =>
  Promise.resolve(
    query.group_by === 'model'
      ? report('model', [
          { key: 'qwen', ...totals, requests: 105, errors: 2 },
          { key: null, ...base, requests: 2, errors: 2, errors_by_code: { rate_limited: 2 } },
        ])
      : query.group_by === 'user'
        ? report('user', [{ key: 'kim', ...totals }, { key: null, ...base, requests: 1 }])
        : report('day', []),
  ),
);

vi.mock('../../api/endpoints', () => ({
  usageApi: { report: (q: { group_by: string }) => reportMock(q), exportCsv: vi.fn() },
  downloadResponse: vi.fn(),
}));

beforeEach(() => useLangStore.setState({ lang: 'en' }));

describe('UsagePage', () => {
  it('counts cancellations apart from errors and shows percentiles, not only averages', async () => {
    render(<UsagePage admin />);
    expect(await screen.findByText('505 / 951 / 1,414 ms')).toBeInTheDocument();
    expect(screen.getByTestId('usage-errors-value')).toHaveTextContent('4');
    expect(screen.getByTestId('usage-cancelled-value')).toHaveTextContent('3');
    expect(screen.getByTestId('usage-ttft-value')).toHaveTextContent('101 / 190 / 2,010 ms');
    const codes = screen.getByTestId('usage-errors-by-code');
    expect(within(codes).getAllByTestId('bar-row').map((r) => r.textContent)).toEqual(['rate_limited2', '5001', 'upstream_error1']);
  });

  it('names the group of refused requests without a model, and deleted users, in words', async () => {
    render(<UsagePage admin />);
    expect((await screen.findAllByText('(no model: refused)')).length).toBeGreaterThan(0);
    expect(screen.getByText('(deleted user)')).toBeInTheDocument();
    expect(screen.queryByText('—', { selector: 'span[title]' })).not.toBeInTheDocument();
  });

  it('speaks Korean', async () => {
    useLangStore.setState({ lang: 'ko' });
    render(<UsagePage admin />);
    expect((await screen.findAllByText('(모델 없음: 거부된 요청)')).length).toBeGreaterThan(0);
    expect(screen.getAllByText('취소됨').length).toBeGreaterThan(0);
  });
});
