import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { useLangStore } from '../i18n';
import { LoginPage } from './LoginPage';

function answer(status: number, body: unknown, headers: Record<string, string> = {}) {
  return vi.fn(() =>
    Promise.resolve(new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/json', ...headers } })),
  );
}

async function submit() {
  const user = userEvent.setup();
  await user.type(screen.getByTestId('login-username'), 'kim');
  await user.type(screen.getByTestId('login-password'), 'wrong-password');
  await user.click(screen.getByTestId('login-submit'));
}

beforeEach(() => useLangStore.setState({ lang: 'ko' }));
afterEach(() => vi.unstubAllGlobals());

describe('LoginPage', () => {
  it('shows a wrong password in Korean, by its code, not the server English', async () => {
    vi.stubGlobal(
      'fetch',
      answer(401, { error: { code: 'invalid_credentials', message: 'invalid username or password', request_id: 'r1' } }),
    );
    render(<LoginPage />);
    await submit();
    const error = await screen.findByTestId('login-error');
    expect(error).toHaveTextContent('사용자 이름 또는 비밀번호가 올바르지 않습니다.');
    expect(error).not.toHaveTextContent('invalid username');
  });

  it('falls back to the server text for a code it does not know', async () => {
    vi.stubGlobal('fetch', answer(418, { error: { code: 'teapot', message: 'I am a teapot', request_id: 'r1' } }));
    render(<LoginPage />);
    await submit();
    expect(await screen.findByTestId('login-error')).toHaveTextContent('I am a teapot');
  });

  it('counts the lockout down from Retry-After and unlocks the button at zero', async () => {
    vi.stubGlobal(
      'fetch',
      answer(429, { error: { code: 'rate_limited', message: 'too many failed logins', request_id: 'r1' } }, { 'Retry-After': '2' }),
    );
    render(<LoginPage />);
    await submit();
    expect(await screen.findByTestId('login-countdown')).toHaveTextContent('2초 후에 다시 시도하세요');
    expect(screen.getByTestId('login-submit')).toBeDisabled();
    await waitFor(() => expect(screen.getByTestId('login-countdown')).toHaveTextContent('1초'), { timeout: 3000 });
    await waitFor(() => expect(screen.getByTestId('login-submit')).toBeEnabled(), { timeout: 3000 });
    expect(screen.queryByTestId('login-countdown')).not.toBeInTheDocument();
  });
});
