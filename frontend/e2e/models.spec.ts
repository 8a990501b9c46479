import { api, apiToken, expect, login, screenshot, send, test } from './fixtures';

interface Status {
  current_profile: string;
  available_profiles: Record<string, { name: string; compatible: boolean }>;
}

test.describe.configure({ mode: 'serial' });

test('an incompatible profile is disabled and says why on hover', async ({ page }) => {
  const token = await apiToken('admin', 'admin123');
  const status = await api<Status>(token, '/api/models/status');
  const profiles = Object.keys(status.available_profiles);
  const gpuOnly = profiles.find((id) => !status.available_profiles[id]!.compatible);
  expect(gpuOnly, 'a GPU profile that this machine cannot run').toBeTruthy();

  await login(page, 'admin', 'admin123');
  await expect(page.getByTestId('current-model')).toHaveText(status.available_profiles[status.current_profile]!.name);
  await page.getByTestId('model-selector').click();
  await expect(page.getByTestId('model-option')).toHaveCount(profiles.length);
  const option = page.getByTestId(`model-option-${gpuOnly}`);
  await expect(option).toHaveClass(/disabled/);
  await expect(page.getByTestId('model-option-simulator-alt')).not.toHaveClass(/disabled/);
  await option.hover();
  await expect(page.getByText('현재 하드웨어로 실행할 수 없습니다')).toBeVisible();
  await expect(page.getByTestId(`model-reason-${gpuOnly}`).locator('li').first()).toBeVisible();
  await screenshot(page, '07-model-selector-incompatible');
  await option.click({ force: true }); // aria-disabled: nothing happens, no switch starts
  await expect(page.getByText('전환 중...')).toHaveCount(0);
});

test('admin switches the model: 전환 중... then 전환 완료, and chats with it', async ({ page }) => {
  const token = await apiToken('admin', 'admin123');
  const status = await api<Status>(token, '/api/models/status');
  await login(page, 'admin', 'admin123');
  await page.getByTestId('model-selector').click();
  await page.getByTestId('model-option-simulator-alt').click();
  // it changes every user's model: asked first, and nothing starts before the answer
  await expect(page.getByTestId('confirm-dialog')).toContainText(status.available_profiles['simulator-alt']!.name);
  await page.getByTestId('confirm-button').click();
  await expect(page.getByText('전환 중...')).toBeVisible();
  await expect(page.getByTestId('model-selector')).toBeDisabled();
  await screenshot(page, '08-switching');
  await expect(page.getByText('전환 완료')).toBeVisible({ timeout: 30_000 });
  await expect(page.getByTestId('current-model')).toHaveText(status.available_profiles['simulator-alt']!.name);
  await screenshot(page, '09-switch-complete');

  await send(page, '안녕하세요!');
  await expect(page.getByTestId('ai-message').first()).toBeVisible({ timeout: 10_000 });
  await expect(page.getByTestId('ai-message').first()).toHaveAttribute('data-status', 'complete', { timeout: 20_000 });

  await page.getByTestId('nav-models').click();
  await expect(page.getByTestId('model-status')).toHaveText('실행 중');
  await expect(page.getByTestId('switch-history')).toContainText('simulator-alt');
  await screenshot(page, '10-admin-models');
});

test('admin usage dashboard and user management render', async ({ page }) => {
  await login(page, 'admin', 'admin123');
  await page.getByTestId('nav-usage').click();
  await expect(page.getByTestId('usage-totals')).toBeVisible();
  await expect(page.getByTestId('usage-totals')).not.toContainText(/^요청0/);
  const download = page.waitForEvent('download');
  await page.getByTestId('download-csv').click();
  expect((await download).suggestedFilename()).toMatch(/\.csv$/);
  await screenshot(page, '11-usage');
  await page.getByTestId('nav-users').click();
  await expect(page.getByTestId('users-table')).toContainText('admin');
  await screenshot(page, '12-users');
});

test('phone width: the chat is usable and the sidebar is a drawer', async ({ page }) => {
  await page.setViewportSize({ width: 390, height: 844 });
  await login(page, 'test', 'test');
  await expect(page.getByTestId('sidebar')).not.toBeInViewport();
  await send(page, 'Write Python code that prints Jay');
  await expect(page.getByTestId('ai-message').last()).toHaveAttribute('data-status', 'complete', { timeout: 20_000 });
  await screenshot(page, '13-phone-chat');
  await page.getByTestId('menu-button').click();
  await expect(page.getByTestId('sidebar')).toBeInViewport();
  // the drawer slides in: wait until it rests at the left edge
  await expect.poll(async () => (await page.getByTestId('sidebar').boundingBox())?.x).toBe(0);
  await screenshot(page, '14-phone-drawer');
});
