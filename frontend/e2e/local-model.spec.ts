import { api, apiToken, expect, login, screenshot, send, test, watchErrors } from './fixtures';

// A short journey against the real CPU model (Qwen2.5-Coder-0.5B via llama.cpp, the local-cpu profile):
// the admin switches to it, a user asks, the answer streams, gets a title, is regenerated.
test.describe.configure({ mode: 'serial' });

interface Status {
  current_profile: string | null;
  status: string;
}

async function switchTo(token: string, profile: string): Promise<void> {
  await api(token, '/api/models/switch', { method: 'POST', body: { profile_id: profile } });
  await expect
    .poll(async () => {
      const s = await api<Status>(token, '/api/models/status');
      return `${s.current_profile}:${s.status}`;
    }, { timeout: 150_000, intervals: [500] })
    .toBe(`${profile}:running`);
}

test('a user talks to the real CPU model', async ({ page }) => {
  test.setTimeout(300_000);
  const { check } = watchErrors(page);
  const admin = await apiToken('admin', 'admin123');
  const before = (await api<Status>(admin, '/api/models/status')).current_profile ?? 'simulator';
  await switchTo(admin, 'local-cpu');
  try {
    await api(admin, '/api/admin/users', { method: 'POST', body: { username: 'cpu-user', password: 'cpu-user-pass', role: 'user' } });
    const user = await apiToken('cpu-user', 'cpu-user-pass');
    // short answers: two shared CPU cores
    await api(user, '/api/users/me/settings', { method: 'PUT', body: { max_tokens: 40 } });

    await login(page, 'cpu-user', 'cpu-user-pass');
    await expect(page.getByTestId('current-model')).toContainText('Qwen2.5 Coder 0.5B');
    await send(page, 'What is the capital of France?');
    const answer = page.getByTestId('ai-message').last();
    await expect(answer).toHaveAttribute('data-status', 'complete', { timeout: 120_000 });
    expect((await answer.locator('.markdown').innerText()).trim().length).toBeGreaterThan(0);
    await expect(page).toHaveURL(/\/c\/[0-9a-f-]{36}$/);
    // the sidebar has a title (the question's words, or a good generated one), never "제목 없음"
    await expect(page.getByTestId('conversation-title').first()).not.toHaveText('');
    await expect(page.getByText('제목 없음')).toHaveCount(0);
    await screenshot(page, 'local-model-01-answer');

    await page.getByTestId('regenerate').click();
    await expect(answer).toHaveAttribute('data-status', 'complete', { timeout: 120_000 });
    await expect(page.getByTestId('variant-position')).toHaveText('2/2');
    await page.reload();
    await expect(page.getByTestId('variant-position')).toHaveText('2/2', { timeout: 15_000 });
    await screenshot(page, 'local-model-02-regenerated');
    check();
  } finally {
    await switchTo(admin, before === 'local-cpu' ? 'simulator' : before);
  }
});
