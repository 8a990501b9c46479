import type { Browser, Page } from '@playwright/test';
import { readFileSync } from 'node:fs';
import { answered, api, apiToken, expect, login, screenshot, send, sim, test, watchErrors } from './fixtures';

// A day of use by one person (and an admin beside them), step by step, with a screenshot of
// each step in test-results/screenshots/journey-*.png. Any page error or console error fails it.
test.describe.configure({ mode: 'serial' });

const USER = { username: 'journey', password: 'journey-pass-1' };
const TIDES = 'Please explain how the ocean tides work every single day';
const KIMCHI = '김치찌개는 어떻게 만드나요? 재료와 순서를 알려주세요';
const JAY = 'Write Python code that prints Jay';

interface SimStats {
  last_request: { messages: { role: string; content: string }[] } | null;
}

let shot = 0;
const step = (page: Page, name: string) => screenshot(page, `journey-${String(++shot).padStart(2, '0')}-${name}`);

/** Conversation reads by id: a page that ping-pongs between two ids makes dozens of them. */
function countConversationReads(page: Page): { count: () => number } {
  let reads = 0;
  page.on('request', (req) => {
    if (req.method() === 'GET' && /\/api\/conversations\/[0-9a-f-]{36}$/.test(new URL(req.url()).pathname)) reads += 1;
  });
  return { count: () => reads };
}

const sidebarItem = (page: Page, title: RegExp | string) =>
  page.getByTestId('conversation-item').filter({ has: page.getByTestId('conversation-title').filter({ hasText: title }) });

async function openFromSidebar(page: Page, title: RegExp | string, question: string): Promise<void> {
  await sidebarItem(page, title).getByRole('button').first().click();
  await expect(page.getByTestId('user-message').first()).toHaveText(question);
  await expect(page.getByTestId('ai-message').first()).toHaveAttribute('data-status', /complete|partial/);
}

test.beforeAll(async () => {
  const admin = await apiToken('admin', 'admin123');
  await api(admin, '/api/admin/users', { method: 'POST', body: { ...USER, role: 'user' } });
});

test.afterEach(async () => {
  await sim('/sim/config', { tokens: 16, ttft_ms: 0, itl_ms: 0 });
});

test('switching conversations by the sidebar and by Back/Forward never blanks the page', async ({ page }) => {
  // issue 13, defect 1: the second conversation opened gave a white screen (React #185) after
  // ~51 alternating reads of both conversations
  const { check } = watchErrors(page);
  const reads = countConversationReads(page);
  const token = await apiToken('test', 'test');
  const ids: string[] = [];
  for (const question of ['first of two', 'second of two']) {
    const res = await fetch(`${process.env.E2E_BASE_URL}/api/chat`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ messages: [{ role: 'user', content: question }], stream: false }),
    });
    expect(res.ok).toBeTruthy();
    ids.push(res.headers.get('X-Conversation-ID')!);
  }
  await login(page, 'test', 'test');
  const open = async (question: string) => {
    await sidebarItem(page, question).getByRole('button').first().click();
    await expect(page.getByTestId('user-message').first()).toHaveText(question);
  };
  await open('first of two');
  await expect(page).toHaveURL(new RegExp(`/c/${ids[0]}$`));
  await open('second of two');
  await expect(page).toHaveURL(new RegExp(`/c/${ids[1]}$`));
  await open('first of two');
  await page.goBack();
  await expect(page).toHaveURL(new RegExp(`/c/${ids[1]}$`));
  await expect(page.getByTestId('user-message').first()).toHaveText('second of two');
  await page.goBack();
  await expect(page).toHaveURL(new RegExp(`/c/${ids[0]}$`));
  await expect(page.getByTestId('user-message').first()).toHaveText('first of two');
  await page.goForward();
  await expect(page.getByTestId('user-message').first()).toHaveText('second of two');
  await expect(page.getByTestId('chat-input')).toBeVisible(); // not a white screen
  expect(reads.count()).toBeLessThanOrEqual(6 + 2); // one read per opening
  await step(page, 'two-conversations-switched');
  check();
  for (const id of ids) await api(token, `/api/conversations/${id}`, { method: 'DELETE' });
});

test('a day of chatting: three conversations, titles, variants, moving around, reload, stop', async ({ page }) => {
  const { check } = watchErrors(page);
  const reads = countConversationReads(page);
  await login(page, USER.username, USER.password);
  await step(page, 'logged-in');

  // 1. conversation A: the sidebar names it by the question at once, the generated title follows
  // (a model taking 1.5 s per call: the title comes well after the answer)
  await sim('/sim/config', { ttft_ms: 1500 });
  await send(page, TIDES);
  await expect(page.getByTestId('conversation-title').first()).toHaveText('Please explain how the ocean tides work every');
  await answered(page);
  await expect(page).toHaveURL(/\/c\/[0-9a-f-]{36}$/);
  const urlA = page.url();
  // the simulator's title is the question's first six words; no reload, never "Untitled"
  await expect(page.getByTestId('conversation-title').first()).toHaveText('Please explain how the ocean tides', { timeout: 15_000 });
  await expect(page.getByText('제목 없음')).toHaveCount(0);
  await sim('/sim/config', { ttft_ms: 0 });
  const firstAnswer = (await page.getByTestId('ai-message').last().locator('.markdown').innerText()).trim();
  await step(page, 'conversation-a-titled');

  // 2. regenerate: the first answer stays as variant 1/2
  await sim('/sim/config', { tokens: 6 });
  await page.getByTestId('regenerate').click();
  await answered(page);
  const variants = page.getByTestId('ai-message').last().getByTestId('variant-position');
  await expect(variants).toHaveText('2/2');
  const secondAnswer = (await page.getByTestId('ai-message').last().locator('.markdown').innerText()).trim();
  expect(secondAnswer).not.toBe(firstAnswer);
  await expect(page.getByTestId('ai-message')).toHaveCount(1);
  await step(page, 'regenerated-2-of-2');
  // the choice is stored on the server (once the new answer's id is known)
  const stored = page.waitForResponse((r) => /\/messages\/\d+\/active$/.test(r.url()) && r.request().method() === 'PUT');
  await page.getByTestId('variant-prev').click();
  await expect(variants).toHaveText('1/2');
  expect((await stored).status()).toBe(200);
  await expect(page.getByTestId('ai-message').last().locator('.markdown')).toHaveText(firstAnswer);
  await step(page, 'variant-1-of-2');
  // after a reload the switcher still has both, and the one chosen
  await page.reload();
  await expect(page.getByTestId('variant-position')).toHaveText('1/2');
  await expect(page.getByTestId('ai-message').last().locator('.markdown')).toHaveText(firstAnswer);
  await step(page, 'variant-1-of-2-after-reload');
  // the next question continues from the chosen answer
  await sim('/sim/config', { tokens: 16 });
  await send(page, 'And what about the moon?');
  await answered(page);
  const context = (await sim<SimStats>('/sim/stats')).last_request?.messages ?? [];
  expect(context.filter((m) => m.role !== 'system').map((m) => m.content)).toEqual([TIDES, firstAnswer, 'And what about the moon?']);
  await expect(page.getByTestId('variant-position')).toHaveText('1/2');

  // 3. conversations B (Korean) and C
  await page.getByTestId('new-chat').click();
  await expect(page).toHaveURL(/\/$/);
  await send(page, KIMCHI);
  await answered(page);
  const urlB = page.url();
  await page.getByTestId('new-chat').click();
  await send(page, JAY);
  await answered(page);
  await expect(page.getByTestId('ai-message').last().locator('pre')).toContainText('print("Jay")');
  const urlC = page.url();
  expect(new Set([urlA, urlB, urlC]).size).toBe(3);
  await expect(page.getByTestId('conversation-item')).toHaveCount(3);
  await step(page, 'three-conversations');

  // 4. move between them by the sidebar, again and again (this was the white screen)
  const before = reads.count();
  for (let round = 0; round < 3; round++) {
    await openFromSidebar(page, /ocean tides/, TIDES);
    await expect(page).toHaveURL(urlA);
    await openFromSidebar(page, /김치찌개/, KIMCHI);
    await expect(page).toHaveURL(urlB);
    await openFromSidebar(page, /Jay/, JAY);
    await expect(page).toHaveURL(urlC);
  }
  // one read per opened conversation, not dozens
  expect(reads.count() - before).toBeLessThanOrEqual(9 + 3);
  await step(page, 'switched-by-sidebar');

  // 5. and by Back / Forward
  const beforeHistory = reads.count();
  await page.goBack();
  await expect(page).toHaveURL(urlB);
  await expect(page.getByTestId('user-message').first()).toHaveText(KIMCHI);
  await page.goBack();
  await expect(page).toHaveURL(urlA);
  await expect(page.getByTestId('user-message').first()).toHaveText(TIDES);
  await expect(page.getByTestId('variant-position')).toHaveText('1/2');
  await page.goForward();
  await expect(page).toHaveURL(urlB);
  await expect(page.getByTestId('user-message').first()).toHaveText(KIMCHI);
  await page.goForward();
  await expect(page).toHaveURL(urlC);
  await expect(page.getByTestId('user-message').first()).toHaveText(JAY);
  expect(reads.count() - beforeHistory).toBeLessThanOrEqual(4 + 2);
  await step(page, 'back-and-forward');

  // 6. reload while an answer streams: the question and what was streamed are kept
  await send(page, '[[sim:tokens=3000;itl_ms=15]] Tell me a very long story');
  const streaming = page.getByTestId('ai-message').last();
  await expect(streaming).toHaveAttribute('data-status', 'streaming');
  await expect.poll(async () => (await streaming.innerText()).length, { timeout: 15_000 }).toBeGreaterThan(100);
  await page.reload();
  await expect(page).toHaveURL(urlC);
  await expect(page.getByTestId('user-message').last()).toContainText('Tell me a very long story');
  await expect(page.getByTestId('ai-message').last()).toHaveAttribute('data-status', 'partial');
  await step(page, 'reloaded-mid-stream');

  // 7. stop an answer
  await send(page, '[[sim:tokens=3000;itl_ms=15]] Another long story please');
  await expect(page.getByTestId('ai-message').last()).toHaveAttribute('data-status', 'streaming');
  await expect(page.getByTestId('stop-button')).toBeVisible();
  await page.getByTestId('stop-button').click();
  await answered(page, 'partial');
  await expect(page.getByTestId('ai-message').last().getByTestId('stopped-badge')).toBeVisible();
  await step(page, 'stopped');
  check();
});

test('a day of housekeeping: rename, search, export, delete, language, log out and in', async ({ page }) => {
  const { check } = watchErrors(page);
  await login(page, USER.username, USER.password);
  await expect(page.getByTestId('conversation-item')).toHaveCount(3);

  // rename A
  const a = sidebarItem(page, /ocean tides/);
  await a.getByRole('button').first().click();
  await expect(page.getByTestId('user-message').first()).toHaveText(TIDES);
  await a.getByTestId('rename-conversation').click();
  await page.getByTestId('rename-input').fill('조석 이야기');
  await page.getByTestId('rename-input').press('Enter');
  await expect(sidebarItem(page, '조석 이야기')).toHaveCount(1);
  await step(page, 'renamed');

  // search by a word of a message
  await page.getByTestId('conversation-search').fill('김치찌개');
  await expect(page.getByTestId('conversation-item')).toHaveCount(1);
  await expect(page.getByTestId('conversation-title')).toContainText('김치찌개');
  await step(page, 'searched');
  await page.getByTestId('conversation-search').fill('');
  await expect(page.getByTestId('conversation-item')).toHaveCount(3);

  // export the renamed conversation as Markdown: both answers of the regenerated turn are there
  const renamed = sidebarItem(page, '조석 이야기');
  await renamed.getByTestId('export-conversation').click();
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('export-md').click()]);
  const markdown = readFileSync((await download.path())!, 'utf8');
  expect(markdown).toContain('# 조석 이야기');
  expect(markdown).toContain('answer 1 of 2');
  expect(markdown).toContain(TIDES);
  await step(page, 'exported');

  // delete the open conversation: back to an empty chat
  await openFromSidebar(page, /Jay/, JAY);
  const c = sidebarItem(page, /Jay/);
  await c.getByTestId('delete-conversation').click();
  await page.getByTestId('confirm-button').click();
  await expect(page.getByTestId('conversation-item')).toHaveCount(2);
  await expect(page).toHaveURL(/\/$/);
  await step(page, 'deleted');

  // change the language and back
  await page.getByTestId('language-switcher').selectOption('en');
  await expect(page.getByTestId('new-chat')).toHaveText('New chat');
  await step(page, 'english');
  await page.getByTestId('language-switcher').selectOption('ko');
  await expect(page.getByTestId('new-chat')).toHaveText('새 대화');

  // log out and in: everything is still there
  await page.getByTestId('logout').click();
  await expect(page.getByTestId('login-form')).toBeVisible();
  await step(page, 'logged-out');
  await page.getByTestId('login-username').fill(USER.username);
  await page.getByTestId('login-password').fill(USER.password);
  await page.getByTestId('login-submit').click();
  await expect(page.getByTestId('conversation-item')).toHaveCount(2);
  await openFromSidebar(page, '조석 이야기', TIDES);
  await expect(page.getByTestId('variant-position')).toHaveText('1/2');
  await step(page, 'logged-in-again');
  check();
});

async function adminPage(browser: Browser): Promise<Page> {
  const context = await browser.newContext({ baseURL: process.env.E2E_BASE_URL });
  const page = await context.newPage();
  await login(page, 'admin', 'admin123');
  return page;
}

test('an admin switches the model while the user chats', async ({ page, browser }) => {
  const { check } = watchErrors(page);
  const admin = await adminPage(browser);
  const adminErrors = watchErrors(admin);
  await login(page, USER.username, USER.password);
  await page.getByTestId('new-chat').click();

  const token = await apiToken('admin', 'admin123');
  try {
    await admin.getByTestId('model-selector').click();
    await admin.getByTestId('model-option-simulator-alt').click();
    await admin.getByTestId('confirm-button').click(); // it affects every user: confirmed
    await expect(admin.getByText('전환 중...')).toBeVisible();
    // "전환 완료" shows for a few seconds only: watch for it from now on, not after the answer
    const switched = expect(admin.getByText('전환 완료'))
      .toBeVisible({ timeout: 60_000 })
      .then(() => null, (err: unknown) => err);
    // the user's question during the switch waits for the new model and is answered by it
    await send(page, '모델이 바뀌는 동안 보낸 질문');
    await step(page, 'chat-during-switch');
    await answered(page, 'complete', 60_000);
    const notSwitched = await switched;
    if (notSwitched) throw notSwitched;
    await step(admin, 'admin-switch-complete');
    await expect(page.getByTestId('user-message').last()).toHaveText('모델이 바뀌는 동안 보낸 질문');
  } finally {
    // and back, for whoever comes next (also when the journey failed)
    await switchBack(token);
  }
  check();
  adminErrors.check();
  await admin.context().close();
});

async function switchBack(token: string): Promise<void> {
  await api(token, '/api/models/switch', { method: 'POST', body: { profile_id: 'simulator' } });
  await expect
    .poll(async () => (await api<{ status: string; current_profile: string }>(token, '/api/models/status')).current_profile, { timeout: 60_000 })
    .toBe('simulator');
  await expect
    .poll(async () => (await api<{ status: string }>(token, '/api/models/status')).status, { timeout: 60_000 })
    .toBe('running');
}
