/**
 * The gateway's errors in the UI's language: by the error `code` (stable, unlike the English
 * `message`), and the model manager's incompatibility reasons by their fixed forms (see
 * gateway/app/model_manager/compatibility.py). Anything unknown falls back to the server's text.
 */
import type { ApiError } from '../api/errors';
import type { Translate } from './index';
import type { MessageKey } from './messages';

/** Codes with a sentence of their own; `{m}` in one is the server's message. */
const CODE_KEYS: Record<string, MessageKey> = {
  invalid_credentials: 'err_invalid_credentials',
  account_disabled: 'err_account_disabled',
  invalid_token: 'err_invalid_token',
  unauthorized: 'err_unauthorized',
  forbidden: 'err_forbidden',
  not_found: 'err_not_found',
  conflict: 'err_conflict',
  validation_error: 'err_validation_error',
  invalid_json: 'err_invalid_json',
  payload_too_large: 'err_payload_too_large',
  rate_limiter_unavailable: 'err_rate_limiter_unavailable',
  database_unavailable: 'err_database_unavailable',
  internal_error: 'err_internal_error',
  context_length_exceeded: 'err_context_length_exceeded',
  incompatible_hardware: 'err_incompatible_hardware',
  switch_in_progress: 'err_switch_in_progress',
  switching_disabled: 'err_switching_disabled',
  profile_not_found: 'err_profile_not_found',
  model_not_found: 'err_model_not_found',
  upstream_rejected: 'err_upstream_rejected',
  model_switching: 'errModelSwitching',
  model_unavailable: 'errModelUnavailable',
  service_unavailable: 'errModelUnavailable',
  upstream_timeout: 'errTimeout',
  upstream_error: 'errUpstream',
  network_error: 'errNetwork',
};

/** One sentence for an error from the gateway, in the current language. */
export function serverErrorText(t: Translate, error: Pick<ApiError, 'code' | 'message' | 'retryAfter'>): string {
  if (error.code === 'rate_limited') {
    return error.retryAfter ? t('errRateLimited', { s: error.retryAfter }) : t('errRateLimitedNoWait');
  }
  const key = CODE_KEYS[error.code];
  if (!key) return error.message;
  return t(key, { m: error.message, s: error.retryAfter ?? 5 });
}

const REASONS: [RegExp, (m: RegExpExecArray, t: Translate) => string][] = [
  [/^needs (\d+) GPUs? \(tensor parallel (\d+)\), found (\d+)$/, (m, t) => t('reason_gpus', { needed: m[1]!, tp: m[2]!, found: m[3]! })],
  [
    /^needs ([\d.]+) GB of GPU memory, the GPUs it would use have ([\d.]+) GB$/,
    (m, t) => t('reason_vram', { need: m[1]!, have: m[2]! }),
  ],
  [/^pinned to GPU ([\d, ]+), which is not present$/, (m, t) => t('reason_pinned', { ids: m[1]! })],
  [
    /^GPU (\d+) \((.*)\): ([\d.]+) x ([\d.]+) GB = ([\d.]+) GB usable, needs ([\d.]+) GB$/,
    (m, t) => t('reason_per_gpu', { gpu: m[1]!, name: m[2]!, util: m[3]!, total: m[4]!, usable: m[5]!, need: m[6]! }),
  ],
  [/^the GPU probe failed: (.*)$/, (m, t) => t('reason_probe', { m: m[1]! })],
];

const num = (v: unknown): string => (typeof v === 'number' ? String(Math.round(v * 10) / 10) : String(v ?? '?'));

/** The model manager's reasons as data: {code, numbers} → a sentence. */
const DETAILS: Record<string, (d: Record<string, unknown>, t: Translate) => string> = {
  not_enough_gpus: (d, t) => t('reason_gpus', { needed: num(d.needed), tp: num(d.tensor_parallel), found: num(d.found) }),
  not_enough_vram: (d, t) => t('reason_vram', { need: num(d.needed_gb), have: num(d.available_gb) }),
  pinned_gpu_missing: (d, t) => t('reason_pinned', { ids: Array.isArray(d.missing) ? d.missing.join(', ') : num(d.missing) }),
  gpu_share_too_small: (d, t) =>
    t('reason_per_gpu', {
      gpu: num(d.gpu),
      name: String(d.name ?? ''),
      util: num(d.utilization),
      total: num(d.total_gb),
      usable: num(d.usable_gb),
      need: num(d.needed_gb),
    }),
  gpu_probe_failed: (d, t) => t('reason_probe', { m: String(d.error ?? '') }),
};

/**
 * One incompatibility reason of the model manager in the UI language: from its data (`detail`,
 * the API's `incompatible_details`) when given, else from the English text's known forms, else
 * the text as the server wrote it.
 */
export function reasonText(t: Translate, reason: string, detail?: unknown): string {
  if (detail && typeof detail === 'object' && typeof (detail as { code?: unknown }).code === 'string') {
    const render = DETAILS[(detail as { code: string }).code];
    if (render) return render(detail as Record<string, unknown>, t);
  }
  for (const [pattern, render] of REASONS) {
    const match = pattern.exec(reason);
    if (match) return render(match, t);
  }
  return reason;
}

/** Whether a code has a sentence of its own (else the caller words it, with the message). */
export function knownErrorCode(code: string): boolean {
  return code === 'rate_limited' || code in CODE_KEYS;
}

/** Any caught failure as a sentence: an ApiError by its code, anything else by its message. */
export function anyErrorText(t: Translate, err: unknown): string {
  if (err && typeof err === 'object' && 'code' in err && 'message' in err && typeof (err as ApiError).code === 'string') {
    return serverErrorText(t, err as ApiError);
  }
  return err instanceof Error ? err.message : String(err);
}
