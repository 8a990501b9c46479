import { api, apiToken, expect, login, screenshot, test, watchErrors } from './fixtures';

// Seed 000's Playwright scenario ("모델 관리 E2E 테스트"), its steps and Korean strings, on this
// gateway's profiles (the simulator stands in for phi3-mini; the seed's app ran on :3000).
test.describe.configure({ mode: 'serial' });

interface Status {
  current_profile: string;
  status: string;
  available_profiles: Record<string, { name: string }>;
}

test.describe('모델 관리 E2E 테스트', () => {
  test('모델 선택 및 전환 전체 플로우', async ({ page }) => {
    const { check } = watchErrors(page);
    const token = await apiToken('admin', 'admin123');
    const status = await api<Status>(token, '/api/models/status');
    const target = status.current_profile === 'simulator' ? 'simulator-alt' : 'simulator';
    // 1. 페이지 접속 (관리자 로그인)
    await login(page, 'admin', 'admin123');
    // 2. 현재 모델 표시 확인
    await expect(page.locator('[data-testid="current-model"]')).toBeVisible();
    // 3. 모델 선택 드롭다운 열기
    await page.click('[data-testid="model-selector"]');
    // 4. 모델 목록 확인
    await expect(page.locator('[data-testid="model-option"]')).toHaveCount(Object.keys(status.available_profiles).length);
    // 5. 다른 모델 선택
    await page.click(`[data-testid="model-option-${target}"]`);
    //    (this UI asks first: the switch affects every user)
    await page.click('[data-testid="confirm-button"]');
    // 6. 전환 중 상태 확인
    await expect(page.locator('text=전환 중')).toBeVisible();
    await screenshot(page, 'seed000-01-전환-중');
    // 7. 전환 완료 대기 (최대 3분)
    await expect(page.locator('text=전환 완료')).toBeVisible({ timeout: 180_000 });
    await screenshot(page, 'seed000-02-전환-완료');
    // 8. 새 모델로 채팅 테스트
    await page.fill('[data-testid="chat-input"]', '안녕하세요!');
    await page.click('[data-testid="send-button"]');
    // 9. 응답 확인
    await expect(page.locator('[data-testid="ai-message"]').first()).toBeVisible({ timeout: 10_000 });
    await expect(page.locator('[data-testid="ai-message"]').first()).toHaveAttribute('data-status', 'complete', { timeout: 20_000 });
    await screenshot(page, 'seed000-03-응답');
    check();
  });

  test('호환되지 않는 모델 선택 시 경고 표시', async ({ page }) => {
    const { check } = watchErrors(page);
    await login(page, 'admin', 'admin123');
    // 하드웨어 정보를 모킹 (GPU 1개, 24GB)
    await page.route('**/api/models/hardware-recommendations', async (route) => {
      await route.fulfill({
        json: {
          current_hardware: { gpu_count: 1, total_vram_gb: 24, available_vram_gb: 24, gpus: [] },
          compatible_profiles: ['simulator', 'simulator-alt', 'local-cpu'],
          incompatible_profiles: ['llama3-70b-instruct'],
          incompatible_reasons: { 'llama3-70b-instruct': ['needs 2 GPUs, found 1', 'needs 140 GB of VRAM, found 24 GB'] },
        },
      });
    });
    await page.reload();
    await page.click('[data-testid="model-selector"]');
    // 호환되지 않는 모델은 비활성화
    await expect(page.locator('[data-testid="model-option-llama3-70b-instruct"]')).toHaveClass(/disabled/);
    // 호버 시 경고 메시지
    await page.hover('[data-testid="model-option-llama3-70b-instruct"]');
    await expect(page.locator('text=현재 하드웨어로 실행할 수 없습니다')).toBeVisible();
    await screenshot(page, 'seed000-04-호환-불가');
    check();
  });
});
