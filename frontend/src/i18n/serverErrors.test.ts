import { describe, expect, it } from 'vitest';
import { ApiError } from '../api/errors';
import { translate, type Translate } from './index';
import { en, ko } from './messages';
import { anyErrorText, reasonText, serverErrorText } from './serverErrors';

const tKo: Translate = (key, vars) => translate('ko', key, vars);
const tEn: Translate = (key, vars) => translate('en', key, vars);

describe('server errors in the UI language', () => {
  it('words known codes in Korean, not the server English', () => {
    const err = new ApiError(401, 'invalid_credentials', 'invalid username or password');
    expect(serverErrorText(tKo, err)).toBe('사용자 이름 또는 비밀번호가 올바르지 않습니다.');
    expect(serverErrorText(tEn, err)).toBe('Invalid username or password.');
    expect(serverErrorText(tKo, new ApiError(409, 'switch_in_progress', 'a switch is already in progress'))).toContain('전환이 진행 중');
    expect(serverErrorText(tKo, new ApiError(429, 'rate_limited', 'slow down', { retryAfter: 7 }))).toContain('7초');
    const off = new ApiError(409, 'switching_disabled', 'model switching is off here: MODEL_RUNTIME=external');
    expect(serverErrorText(tKo, off)).toContain('클러스터');
    expect(serverErrorText(tEn, off)).toContain('managed by the cluster');
  });

  it('falls back to the server text for an unknown code, and for anything not an ApiError', () => {
    expect(serverErrorText(tKo, new ApiError(400, 'content_policy', 'blocked by policy'))).toBe('blocked by policy');
    expect(anyErrorText(tKo, new Error('boom'))).toBe('boom');
  });

  it('translates the incompatibility reasons of the model manager', () => {
    expect(reasonText(tKo, 'needs 2 GPUs (tensor parallel 2), found 0')).toBe('GPU 2개가 필요합니다 (텐서 병렬 2), 감지된 GPU: 0개');
    expect(reasonText(tKo, 'needs 40 GB of GPU memory, the GPUs it would use have 24.0 GB')).toContain('40 GB');
    expect(reasonText(tKo, 'GPU 0 (NVIDIA L4): 0.9 x 24.0 GB = 21.6 GB usable, needs 30.0 GB')).toContain('사용 가능 21.6 GB');
    expect(reasonText(tKo, 'something new')).toBe('something new');
  });

  it('words the reasons from their data when the API gives it', () => {
    const text = 'needs 2 GPUs (tensor parallel 2), found 0 -- any wording';
    expect(reasonText(tKo, text, { code: 'not_enough_gpus', needed: 2, tensor_parallel: 2, found: 0 })).toBe(
      'GPU 2개가 필요합니다 (텐서 병렬 2), 감지된 GPU: 0개',
    );
    expect(reasonText(tKo, 'x', { code: 'pinned_gpu_missing', missing: [1, 3] })).toBe('GPU 1, 3에 고정되어 있지만, 해당 GPU가 없습니다');
    expect(reasonText(tEn, 'x', { code: 'not_enough_vram', needed_gb: 40, available_gb: 23.99 })).toBe(
      'needs 40 GB of GPU memory, the GPUs it would use have 24 GB',
    );
    expect(reasonText(tKo, 'as the server says', { code: 'unknown_code' })).toBe('as the server says');
  });

  it('has every key in both languages', () => {
    expect(Object.keys(en).sort()).toEqual(Object.keys(ko).sort());
  });
});
