import type { Page } from '@playwright/test';
import { api, apiToken, expect, login, screenshot, send, test } from './fixtures';

// issue 13 #4-#7: the phone layout, Korean server errors and the smaller details, in Chromium
// against the real gateway; any page error or console error fails the test.

/** Collects page errors and console errors; `allow` lists console texts a test expects. */
function watchErrors(page: Page, allow: RegExp[] = []): string[] {
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !allow.some((re) => re.test(msg.text()))) errors.push(`console: ${msg.text()}`);
  });
  return errors;
}

/** The page does not scroll sideways: nothing is wider than the window, nor its own scroller. */
async function noSidewaysScroll(page: Page): Promise<void> {
  const overflow = await page.evaluate(() => {
    const out: string[] = [];
    const width = window.innerWidth;
    if (document.documentElement.scrollWidth > width) out.push(`document ${document.documentElement.scrollWidth}px`);
    for (const el of Array.from(document.querySelectorAll('main *'))) {
      const style = getComputedStyle(el);
      if (/(auto|scroll)/.test(style.overflowY) && el.scrollWidth > el.clientWidth + 1 && !/(auto|scroll)/.test(style.overflowX)) {
        out.push(`${el.tagName}.${el.className} ${el.scrollWidth}>${el.clientWidth}`);
      }
    }
    return out;
  });
  expect(overflow).toEqual([]);
}

test.describe.configure({ mode: 'serial' });

test('phone 390x844: the model list stays on screen, a language switch, users as cards', async ({ page }) => {
  const errors = watchErrors(page);
  await page.setViewportSize({ width: 390, height: 844 });
  await login(page, 'admin', 'admin123');

  await page.getByTestId('model-selector').click();
  const list = page.getByTestId('model-listbox');
  await expect(list).toBeVisible();
  const box = (await list.boundingBox())!;
  expect(box.x).toBeGreaterThanOrEqual(0);
  expect(box.x + box.width).toBeLessThanOrEqual(390);
  await screenshot(page, '20-phone-model-list');
  await page.keyboard.press('Escape');
  await noSidewaysScroll(page);

  const lang = page.getByTestId('language-switcher');
  await expect(lang).toBeInViewport();
  await lang.selectOption('en');
  await expect(page.getByTestId('chat-input')).toHaveAttribute('placeholder', /Type a message/);
  await screenshot(page, '21-phone-english');
  await lang.selectOption('ko');
  await expect(page.getByTestId('chat-input')).toHaveAttribute('placeholder', /메시지를 입력하세요/);

  await page.getByTestId('nav-users').click();
  await expect(page.getByTestId('users-table')).toContainText('admin');
  for (const row of await page.getByTestId('user-row').all()) {
    const r = (await row.boundingBox())!;
    expect(r.x + r.width).toBeLessThanOrEqual(390);
  }
  await noSidewaysScroll(page);
  await screenshot(page, '22-phone-users');

  await page.getByTestId('nav-usage').click();
  await expect(page.getByTestId('usage-totals')).toBeVisible();
  await noSidewaysScroll(page);
  await screenshot(page, '23-phone-usage');

  await page.getByTestId('nav-models').click();
  await expect(page.getByTestId('model-status')).toBeVisible();
  await noSidewaysScroll(page);
  await screenshot(page, '24-phone-models');
  expect(errors).toEqual([]);
});

test('a wrong password is said in Korean, not the server English', async ({ page }) => {
  const errors = watchErrors(page, [/status of 401/]);
  await page.goto('/');
  await page.getByTestId('login-username').fill('test');
  await page.getByTestId('login-password').fill('not-the-password');
  await page.getByTestId('login-submit').click();
  await expect(page.getByTestId('login-error')).toHaveText('사용자 이름 또는 비밀번호가 올바르지 않습니다.');
  await screenshot(page, '25-login-error-ko');
  expect(errors).toEqual([]);
});

test('search with no result, then logout leaves /c/<id> for /login', async ({ page }) => {
  const errors = watchErrors(page);
  await login(page, 'test', 'test');
  await send(page, 'A question to have a conversation');
  await expect(page.getByTestId('ai-message').last()).toHaveAttribute('data-status', 'complete', { timeout: 20_000 });
  await expect(page).toHaveURL(/\/c\/[^/]+$/);
  await page.getByTestId('conversation-search').fill('zzz-nothing-matches-this-zzz');
  await expect(page.getByTestId('conversations-empty')).toHaveText('검색 결과가 없습니다');
  await page.getByTestId('conversation-search').fill('');
  await expect(page.getByTestId('conversations-empty')).toHaveCount(0);

  await page.getByTestId('logout').click();
  await expect(page.getByTestId('login-form')).toBeVisible();
  await expect(page).toHaveURL(/\/login$/);
  expect(errors).toEqual([]);
});

test('a message that cannot fit the model context is refused before sending', async ({ page }) => {
  const errors = watchErrors(page);
  await login(page, 'test', 'test');
  const chats: string[] = [];
  page.on('request', (req) => req.url().includes('/api/chat') && chats.push(req.url()));
  await page.getByTestId('chat-input').fill('lorem ipsum '.repeat(5000)); // 60,000 characters
  await expect(page.getByTestId('context-warning')).toBeVisible();
  await expect(page.getByTestId('send-button')).toBeDisabled();
  await page.getByTestId('chat-input').press('Enter');
  await screenshot(page, '26-context-warning');
  expect(chats).toEqual([]);
  await page.getByTestId('chat-input').fill('short');
  await expect(page.getByTestId('context-warning')).toHaveCount(0);
  expect(errors).toEqual([]);
});

test('admin: disabling a user and switching the model ask first; reload says what it did', async ({ page }) => {
  const errors = watchErrors(page);
  const token = await apiToken('admin', 'admin123');
  const name = `e2e-disable-${Date.now()}`;
  await api(token, '/api/admin/users', { method: 'POST', body: { username: name, password: 'password-123', role: 'user' } });
  await login(page, 'admin', 'admin123');
  await page.getByTestId('nav-users').click();
  const row = page.getByTestId('user-row').filter({ hasText: name });
  await row.getByTestId('user-status').click();
  await expect(page.getByTestId('confirm-dialog')).toContainText(name);
  await page.getByText('취소').click();
  await expect(row.getByTestId('user-status')).toHaveText('활성');
  await row.getByTestId('user-status').click();
  await page.getByTestId('confirm-button').click();
  await expect(row.getByTestId('user-status')).toHaveText('비활성');
  await row.getByTestId('user-status').click(); // enabling again is not asked
  await expect(row.getByTestId('user-status')).toHaveText('활성');

  await page.getByTestId('nav-models').click();
  await page.getByTestId('reload-profiles').click();
  await expect(page.getByTestId('reload-note')).toContainText('프로파일');
  const switchButton = page.locator('[data-testid^="switch-to-"]:enabled').first();
  await switchButton.click();
  await expect(page.getByTestId('confirm-dialog')).toBeVisible();
  await screenshot(page, '27-confirm-switch');
  await page.getByText('취소').click();
  await expect(page.getByTestId('confirm-dialog')).toHaveCount(0);
  await expect(page.getByTestId('model-status')).toHaveText('실행 중');
  expect(errors).toEqual([]);
});
