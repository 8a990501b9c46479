import { expect, test as base, type Page } from '@playwright/test';
import { mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const shotsDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'test-results', 'screenshots');

export const test = base.extend({
  // the gateway's address is known only after global setup started it
  // eslint-disable-next-line no-empty-pattern -- Playwright reads the fixture's dependencies from this pattern
  baseURL: async ({}, provide) => {
    await provide(process.env.E2E_BASE_URL);
  },
});

export { expect };

export async function screenshot(page: Page, name: string): Promise<void> {
  mkdirSync(shotsDir, { recursive: true });
  await page.screenshot({ path: join(shotsDir, `${name}.png`), fullPage: false });
}

export async function login(page: Page, username: string, password: string): Promise<void> {
  await page.goto('/');
  await page.getByTestId('login-username').fill(username);
  await page.getByTestId('login-password').fill(password);
  await page.getByTestId('login-submit').click();
  await expect(page.getByTestId('chat-input')).toBeVisible();
}

export async function apiToken(username: string, password: string): Promise<string> {
  const res = await fetch(`${process.env.E2E_BASE_URL}/api/auth/login`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ username, password }),
  });
  expect(res.ok).toBeTruthy();
  return ((await res.json()) as { access_token: string }).access_token;
}

export async function api<T>(token: string, path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  const res = await fetch(`${process.env.E2E_BASE_URL}${path}`, {
    method: init.method ?? 'GET',
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return (res.status === 204 ? undefined : await res.json()) as T;
}

export async function send(page: Page, text: string): Promise<void> {
  await page.getByTestId('chat-input').fill(text);
  await page.getByTestId('send-button').click();
}

/** The simulator behind the gateway (its /sim/* endpoints: config, the last request). */
export async function sim<T>(path: string, body?: unknown): Promise<T> {
  const res = await fetch(`${process.env.E2E_SIM_URL}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw new Error(`${path}: ${res.status}`);
  return (await res.json()) as T;
}

/**
 * Fails the test on any uncaught page error or console error (React's "Maximum update depth",
 * a failed resource load, ...). Call at the start of a test; `check()` at its end.
 */
export function watchErrors(page: Page): { errors: string[]; check: () => void } {
  const errors: string[] = [];
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') errors.push(`console.error: ${msg.text()}`);
  });
  return { errors, check: () => expect(errors, 'errors in the page').toEqual([]) };
}

/** Waits for the last answer on the page to end as `status`. */
export async function answered(page: Page, status = 'complete', timeout = 20_000): Promise<void> {
  await expect(page.getByTestId('ai-message').last()).toHaveAttribute('data-status', status, { timeout });
}
