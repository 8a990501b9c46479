import { api, apiToken, expect, login, screenshot, send, test } from './fixtures';

interface Status {
  current_profile: string | null;
  status: string;
}

async function switchTo(token: string, profile: string): Promise<void> {
  await api(token, '/api/models/switch', { method: 'POST', body: { profile_id: profile } });
  await expect
    .poll(async () => {
      const s = await api<Status>(token, '/api/models/status');
      return `${s.current_profile}/${s.status}`;
    }, { timeout: 30_000 })
    .toBe(`${profile}/running`);
}

test('a reasoning model: the Thinking block streams, folds with its duration, and is there after a reload', async ({ page }) => {
  const token = await apiToken('admin', 'admin123');
  const before = (await api<Status>(token, '/api/models/status')).current_profile;
  await switchTo(token, 'simulator-reasoning');
  try {
    await login(page, 'test', 'test');
    await send(page, 'Why is the sky blue?');
    const answer = page.getByTestId('ai-message').last();
    const thinking = answer.getByTestId('thinking');
    await expect(thinking).toBeVisible();
    await expect(thinking).toContainText('The user wants an answer');
    await expect(answer).toHaveAttribute('data-status', 'complete', { timeout: 20_000 });
    // once the answer is there the thinking folds away, with how long it took
    await expect(thinking).not.toHaveAttribute('open');
    await expect(answer.getByTestId('thinking-label')).toHaveText(/\d+\.\d/);
    await expect(answer.locator('.markdown')).not.toContainText('The user wants');
    await thinking.locator('summary').click();
    await expect(thinking).toHaveAttribute('open');
    await screenshot(page, '13-thinking');

    await expect(page).toHaveURL(/\/c\/[^/]+$/);
    await page.reload();
    const saved = page.getByTestId('ai-message').last();
    await expect(saved.getByTestId('thinking-label')).toHaveText(/\d+\.\d/);
    await expect(saved.getByTestId('thinking')).toContainText('The user wants an answer');
    await expect(saved.locator('.markdown')).not.toContainText('The user wants');
  } finally {
    if (before && before !== 'simulator-reasoning') await switchTo(token, before);
  }
});
